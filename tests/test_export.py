"""`catdog export --format onnx`: tiny real models of each kind exported, ONNX Runtime's outputs equal to the
model's own on inputs the export check never saw, any batch size; and every refusal one line, nothing written."""

import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from catdog import CatdogError
from catdog.commands import export
from catdog.data.images import discover
from catdog.data.prepared import prepare
from catdog.models.architectures import build_model, load_checkpoint
from catdog.models.registry import REGISTRY, example_entry
from conftest import pipeline_env, write_image

SIZE = 16
# Every registered architecture but pretrained, whose MobileNetV2 needs 32 px and a minute's export: its
# ONNX path is test_onnx_engine's frozen-backbone tests and the slow registry runs.
TINY = [arch for arch in REGISTRY if arch != "pretrained"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A working folder with a tiny data/prepared (8 test images of 16x16) and no models/."""
    root = tmp_path_factory.mktemp("export")
    for i in range(20):
        write_image(root / "images" / "cat" / f"{i}.png", (60 + 5 * i,) * 3, size=(20, 20))
        write_image(root / "images" / "dog" / f"{i}.png", (150 + 4 * i,) * 3, size=(20, 20))
    files, labels, classes = discover(root / "images")
    prepare(files, labels, classes, root / "images", sizes=[SIZE], val_fraction=0.2, test_fraction=0.2, seed=1,
            out_dir=root / "data" / "prepared", workers=1)
    return root


@pytest.fixture
def workdir(repo, monkeypatch):
    """The tiny repository as the current directory, as `catdog` run there sees it; models/ removed after."""
    monkeypatch.chdir(repo)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    yield repo
    shutil.rmtree(repo / "models", ignore_errors=True)


def save_checkpoint(path, kind) -> dict:
    """A freshly initialised tiny model of `kind` saved as src/stages/train.py saves it; its config."""
    name, cfg = f"tiny_{kind}", example_entry(kind, SIZE)
    torch.manual_seed(0)
    np.random.seed(0)  # NumpyModel draws its generator's seed from NumPy's global one
    model = build_model(cfg, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": name, "config": cfg, "classes": ["cat", "dog"], "best_epoch": 1,
                "state_dict": model.state_dict()}, path)
    return cfg


def run_export(capsys, *args) -> str:
    export.main(["--format", "onnx", *map(str, args)])
    return capsys.readouterr().out


@pytest.mark.parametrize("kind", TINY)
def test_onnx_runtime_gives_the_models_outputs_on_new_inputs_at_any_batch_size(capsys, workdir, kind):
    save_checkpoint(workdir / "models" / "model.pt", kind)
    out = run_export(capsys)  # the defaults: models/model.pt of the current repository -> models/model.onnx

    path = workdir / "models" / "model.onnx"
    n_test = len(np.load(workdir / "data" / "prepared" / f"x{SIZE}_test.npy"))
    assert out.startswith(f"{path}: ") and f"{n_test} test images checked" in out and len(out.splitlines()) == 1
    assert not list(workdir.rglob("*.tmp"))
    checkpoint, model = load_checkpoint(workdir / "models" / "model.pt")  # as the stages would run it
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    [images] = session.get_inputs()
    assert images.type == "tensor(float)" and images.shape[1:] == [3, SIZE, SIZE] and isinstance(images.shape[0], str)
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert metadata["classes"] == '["cat", "dog"]' and metadata["input_size"] == str(SIZE)

    generator = torch.Generator().manual_seed(1)
    for batch in (1, 3, 37):  # none of them the export's example batch of 2 nor the check's of 64
        x = torch.rand(batch, 3, SIZE, SIZE, generator=generator) * 2 - 1
        with torch.no_grad():
            if isinstance(model, torch.nn.Module):
                model.eval()
            expected = model(x).numpy()
        [got] = session.run(None, {images.name: x.numpy()})
        assert got.shape == (batch, 2 if kind == "multitask" else 1)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    if kind == "multitask":
        assert 0 < got[:, 1].min() and got[:, 1].max() < 1  # the brightness head's output, after its sigmoid


def test_outputs_that_differ_from_pytorchs_are_refused_and_nothing_written(capsys, workdir, monkeypatch):
    save_checkpoint(workdir / "models" / "model.pt", "fc")
    real_predict = export.predict
    monkeypatch.setattr(export, "predict", lambda *args, **kwargs: real_predict(*args, **kwargs) + 3e-4)
    with pytest.raises(CatdogError, match=r"differ from PyTorch's by up to 0\.0003 on the 8 test images") as error:
        run_export(capsys, "--out", workdir / "models" / "other.onnx")
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in (workdir / "models").iterdir()) == ["model.pt"]  # no ONNX file, no temporary


def test_a_missing_checkpoint_is_one_line_and_writes_nothing(workdir):
    result = subprocess.run([sys.executable, "-m", "catdog", "export", "--format", "onnx"], cwd=workdir,
                            env=pipeline_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (f"catdog: error: no checkpoint at {workdir / 'models' / 'model.pt'}: train one with "
                             "`dvc repro`, or pass --model PATH\n")
    assert not (workdir / "models").exists()


def test_an_unknown_format_or_no_prepared_data_is_refused(capsys, workdir, tmp_path, monkeypatch):
    save_checkpoint(workdir / "models" / "model.pt", "fc")
    with pytest.raises(CatdogError, match=r"^--format tflite: unknown format; valid: onnx$"):
        export.main(["--format", "tflite"])
    monkeypatch.chdir(tmp_path)  # a repository without data/prepared
    with pytest.raises(CatdogError, match=r"data/prepared is missing: run `dvc repro prepare`"):
        export.main(["--format", "onnx", "--model", str(workdir / "models" / "model.pt")])
    assert not (tmp_path / "models").exists()
