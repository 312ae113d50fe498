"""A normal run says what it does and nothing else: no DVC warning about our files, no MLflow warning about how we
log, no terminal escape codes in a log; and it changes no committed file the user did not ask it to."""

import logging
import subprocess
import warnings
from pathlib import Path

import mlflow
import numpy as np
import torch

from catdog.data.tensors import Split
from catdog.models.architectures import build_model
from catdog.models.registry import example_entry
from catdog.tracking import mlflow_model
from catdog.training.loop import fit, seed_everything
from conftest import ROOT


def test_no_package_init_is_empty():
    """DVC warns "'src/catdog/data/__init__.py' is empty." for each empty dependency, on every stage it runs."""
    empty = [path.relative_to(ROOT).as_posix() for path in (ROOT / "src").rglob("__init__.py")
             if not path.read_bytes().strip()]
    assert not empty, f"give each a docstring: {empty}"


def test_training_in_a_log_has_no_escape_codes(capfd):
    """stderr is a pipe here, as under `dvc exp run`: the epoch's batch bars stay out, the epochs bar draws plain."""
    cfg = {**example_entry("fc", 16), "epochs": 3, "batch_size": 2}
    seed_everything(0)
    data = Split(torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8), torch.tensor([0.0, 1.0] * 4),
                 torch.rand(8))
    fit(build_model(cfg), cfg, data, data, torch.device("cpu"), seed=0)
    err = capfd.readouterr().err
    assert "epochs" in err and "\x1b[" not in err, repr(err[-300:])


def test_logging_the_mlflow_model_warns_nothing_of_ours(tmp_path, caplog):
    """Neither "Passing a Python object as `python_model`" (the model is logged as code: tracking/pyfunc_code.py)
    nor "Add type hints to the `predict` method"; MLflow's own deprecations of its dependencies are not ours."""
    cfg = example_entry("fc", 16)
    torch.save({"model": "tiny", "config": cfg, "classes": ["cat", "dog"], "best_epoch": 1,
                "state_dict": build_model(cfg).state_dict()}, tmp_path / "model.pt")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow_logger = logging.getLogger("mlflow")  # it does not propagate to the root logger, caplog's
    mlflow_logger.addHandler(caplog.handler)
    try:
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, "mlflow"):
            warnings.simplefilter("always")
            with mlflow.start_run() as run:
                mlflow_model.log(str(tmp_path / "model.pt"),
                                 mlflow_model.example_image(np.zeros((3, 16, 16), np.uint8)), "dog")
    finally:
        mlflow_logger.removeHandler(caplog.handler)
    ours = [str(w.message) for w in caught if "mlflow/pyfunc" in Path(w.filename).as_posix()]
    ours += [r.getMessage() for r in caplog.records if r.name.startswith("mlflow.pyfunc")]
    assert not ours, ours
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")  # still loads, from its code
    assert type(model.unwrap_python_model()).__name__ == "CatdogModel"


def test_the_leaderboard_goes_where_git_does_not_look_unless_told():
    """`catdog leaderboard` must not overwrite a committed file; the benchmark's leaderboard is written with --out."""
    from catdog.commands.leaderboard import DEFAULT_OUT

    ignored = subprocess.run(["git", "check-ignore", "-q", f"{DEFAULT_OUT}/leaderboard.md"], cwd=ROOT)
    assert ignored.returncode == 0, f"{DEFAULT_OUT}/ is not in .gitignore"
    tracked = subprocess.run(["git", "ls-files", str(DEFAULT_OUT)], cwd=ROOT, capture_output=True, text=True)
    assert tracked.stdout == ""
    assert "--out benchmarks" in (ROOT / "benchmarks" / "compare_models.sh").read_text()
