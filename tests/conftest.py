import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def write_image(path: Path, colour, size=(40, 30), fmt=None, mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).convert(mode).save(path, format=fmt)


@pytest.fixture(autouse=True)
def no_mlflow_store_leaks(monkeypatch):
    """A test that sets MLflow's process-wide store (mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI)
    must not point the next tests at its temporary store."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    yield
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    tracking_utils._tracking_uri = None
    registry_utils._registry_uri = None


@pytest.fixture(autouse=True)
def onnx_cache_outside_the_repository(monkeypatch, tmp_path_factory):
    """Models exported for ONNX Runtime (train.inference) go to one folder of this test session, not to the
    repository's .cache/onnx: in-process tests that do not chdir would fill it with tiny models' files."""
    import catdog.inference.forward

    monkeypatch.setattr(catdog.inference.forward, "ONNX_CACHE", tmp_path_factory.getbasetemp() / "onnx-cache")


@pytest.fixture(autouse=True)
def other_sizes_outside_the_repository(monkeypatch, tmp_path):
    """Sizes decoded on first use (data.prepared.other_size) go to the test's own folder, not the repository's
    .cache."""
    import catdog.data.prepared

    monkeypatch.setattr(catdog.data.prepared, "OTHER_SIZES", tmp_path / "other-sizes")


@pytest.fixture
def image_folder(tmp_path):
    """An ImageFolder layout: 10 dark cats, 10 bright dogs, of mixed sizes, formats and modes."""
    root = tmp_path / "images"
    for i in range(10):
        write_image(root / "cat" / f"{i}.jpg", (60, 60, 60), size=(30 + i, 50))
        write_image(root / "dog" / f"{i}.JPG" if i % 3 == 0 else root / "dog" / f"{i}.png", (200, 200, 200),
                    size=(60, 20 + 3 * i), fmt="JPEG" if i % 3 == 0 else None, mode="L" if i == 1 else "RGB")
    return root


def pipeline_env() -> dict:
    """The environment a user has with .venv activated: `python` is this interpreter, the default MLflow store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com", GIT_COMMITTER_NAME="test",
               GIT_COMMITTER_EMAIL="test@example.com", DVC_NO_ANALYTICS="1")
    return env


def run(args, cwd, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=pipeline_env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


TINY = {"synthetic.n_images": 40, "epochs": 2}


def committed_params() -> dict:
    """params.yaml as git's index has it (committed, or staged with `git add params.yaml`), never the workspace's: a
    failed `dvc exp run -S model=typo` leaves its value in the workspace's file (docs/experiments.md), and a test
    must not fail on what a user tried."""
    from catdog.config import ParamsLoader

    text = subprocess.run(["git", "show", ":params.yaml"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout
    return yaml.load(text, Loader=ParamsLoader)


def copy_repo(dest):
    """The files git would commit (tracked and untracked, not ignored), as a fresh clone would have them."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    params = committed_params()
    params["synthetic"]["n_images"] = TINY["synthetic.n_images"]
    for cfg in params["models"].values():
        cfg["epochs"] = TINY["epochs"]
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "tiny"], dest)
    return dest


def set_params(repo, **dotted) -> None:
    """set_params(repo, model="deep", **{"models.deep.epochs": 3}) edits the copy's params.yaml."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = params
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_http(server: subprocess.Popen, url: str, log: Path, seconds: float) -> None:
    """Return once `url` answers 200; fail with the end of the server's log if it exits or does not answer within
    `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        if server.poll() is not None:
            pytest.fail(f"`{' '.join(map(str, server.args))}` exited with {server.returncode}:\n"
                        f"{log.read_text()[-5000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"no answer on {url} within {seconds} s:\n{log.read_text()[-5000:]}")
        time.sleep(0.5)


def stop_process_group(server: subprocess.Popen) -> None:
    """SIGTERM to a server's process group (started with start_new_session: mlflow and its uvicorn workers),
    SIGKILL to whatever of it outlives 30 s."""
    deadline = time.monotonic() + 30
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
        while time.monotonic() < deadline:
            if server.poll() is not None:
                os.killpg(server.pid, 0)  # ProcessLookupError once every process of the group is gone
            time.sleep(0.2)
        os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)
