"""Wrong params fail in the `check` stage, before any other stage runs, with one line that names the key and the fix.

Every test builds its params from the committed params.yaml (conftest.committed_params), never the workspace's."""

import copy
import dataclasses
import os
import subprocess
import sys

import pytest
import yaml

from catdog import CatdogError
from catdog.config import check_data, load_params
from catdog.models import registry
from catdog.models.registry import REGISTRY, check_entry, check_model
from conftest import ROOT, committed_params, copy_repo, run
from stages import check

PARAMS = committed_params()
DELETE = object()  # a change that removes the key


def changed(model: str | None = None, **dotted) -> dict:
    """The committed params with model=`model` and each dotted key set (or deleted: DELETE)."""
    params = copy.deepcopy(PARAMS)
    if model:
        params["model"] = model
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = params
        for parent in parents:
            node = node[parent]
        if value is DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    return params


def run_check(tmp_path, monkeypatch, params: dict) -> str:
    """The check stage on `params` in a folder of its own; what it printed."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    check.main()
    return (tmp_path / "data" / "params.ok").read_text()


def test_the_committed_params_pass_the_check_stage(tmp_path, monkeypatch):
    assert run_check(tmp_path, monkeypatch, PARAMS) == "ok\n"


@pytest.mark.parametrize("name", sorted(PARAMS["models"]))
def test_every_committed_model_entry_passes(name):
    assert check_model(changed(name)) == (name, PARAMS["models"][name])


BAD = [  # (model, {dotted key: value}, the message's start): each a case a user met or a review found
    ("cnn", {"models.cnn.channels": DELETE},
     "models.cnn.channels is missing: arch cnn needs it, a non-empty list of positive integers"),
    ("resnet18_frozen", {"models.resnet18_frozen.backbone": DELETE},
     "models.resnet18_frozen.backbone is missing: arch pretrained needs it, one of mobilenet_v2, resnet18"),
    (None, {"seed": -1}, "seed=-1 must be an integer from 0 to 2**32 - 1"),
    ("cnn", {"models.cnn.augment": {"flip": True}},
     "models.cnn.augment={'flip': True} must be null, or {crop_scale: [low, high]"),
    ("cnn", {"models.cnn.augment": {"crop_scale": [0.9, 0.5]}}, "models.cnn.augment="),
    ("mlp", {"models.mlp.hidden": [-1]}, "models.mlp.hidden=[-1] must be a list of positive integers"),
    (None, {"data.val_fraction": "a tenth"}, "data.val_fraction='a tenth' must be a number in (0, 1)"),
    (None, {"data.val_fraction": 0.6, "data.test_fraction": 0.6}, "data.val_fraction=0.6 and data.test_fraction="),
    (None, {"data.sizes": [64, True]}, "data.sizes=[64, True] must be a list of square sizes"),
    (None, {"models.logistic.lr": 0}, "models.logistic.lr=0 must be a positive number"),
    (None, {"models.logistic.batch_size": -1}, "models.logistic.batch_size=-1 must be a positive integer, or full"),
    (None, {"models.logistic.epochs": 2.5}, "models.logistic.epochs=2.5 must be a positive integer"),
    (None, {"models.logistic.optimizer": "rmsprop"}, "models.logistic.optimizer='rmsprop' must be one of sgd, adam"),
    (None, {"models.logistic.input_size": "96"}, "models.logistic.input_size='96' must be a square side in pixels"),
    (None, {"models.logistic.arch": "transformer"}, "models.logistic.arch='transformer' is unknown; valid: cnn, fc"),
    (None, {"models.logistic.weight_decay": -0.1}, "models.logistic.weight_decay=-0.1 must be a number >= 0"),
    ("cnn", {"models.cnn.chanels": [8]}, "models.cnn.chanels is not a key of arch cnn: remove it or fix its spelling"),
    ("cnn", {"models.cnn.channels": [8] * 7}, "models.cnn: input_size=64 is too small for 7 pooling blocks"),
    ("numpy_deep", {"models.numpy_deep.weight_decay": 0.1}, "models.numpy_deep.weight_decay is not a key of arch "
                                                            "numpy"),
    ("numpy_deep", {"models.numpy_deep.activations": ["relu", "sigmoid"]},
     "models.numpy_deep: activations has 2 entries for 3 hidden layers and the output: give 4"),
    ("multitask", {"models.multitask.loss_weights": {"classification": 0.7}},
     "models.multitask.loss_weights={'classification': 0.7} must be {classification: w1, brightness: w2}"),
    ("mobilenet_v2_frozen", {"models.mobilenet_v2_frozen.freeze": "yes"},
     "models.mobilenet_v2_frozen.freeze='yes' must be true"),
    (None, {"train.inferance": "torch"}, "train.inferance is not a key of train: remove it or fix its spelling"),
    (None, {"train.sweep": 3}, "train.sweep=3 must be a label"),
    (None, {"synthetic.seed": -3}, "synthetic.seed=-3 must be an integer from 0"),
    (None, {"evaluate.inference": "tensorrt"}, "evaluate.inference='tensorrt' is unknown; valid: auto, torch"),
    (None, {"evaluate.device": "tpu"}, "evaluate.device='tpu' is unknown; valid: auto, cpu"),
    (None, {"evaluate.engine": "torch"}, "evaluate.engine is not a key of evaluate: remove it or fix its spelling"),
    ("numpy_deep", {"evaluate.precision": "bfloat16"}, "models.numpy_deep (arch numpy) computes in NumPy float32: "
                                                       "set evaluate.precision: auto or float32"),
    ("resnet9000", {}, "model='resnet9000' is not an entry of `models`; valid: cnn, deep"),
]


@pytest.mark.parametrize("model, changes, message", BAD, ids=[" ".join(c[1]) or c[0] for c in BAD])
def test_each_bad_param_is_one_line_from_the_check_stage(tmp_path, monkeypatch, model, changes, message):
    with pytest.raises(CatdogError) as error:
        run_check(tmp_path, monkeypatch, changed(model, **changes))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert not (tmp_path / "data" / "params.ok").exists()


def test_check_does_not_import_torch(tmp_path):
    """The check stage reads the architectures' registration, not their builders: no torch, seconds saved."""
    code = "import sys; import stages.check; assert 'torch' not in sys.modules, 'check imports torch'"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.returncode == 0, result.stderr


def test_an_architecture_registered_in_the_registry_is_checked_by_its_keys(monkeypatch):
    """No source is parsed: an architecture added to REGISTRY, however it is added, is one `check` knows."""
    monkeypatch.setitem(REGISTRY, "tinyvgg", dataclasses.replace(REGISTRY["cnn"]))
    cfg = {**PARAMS["models"]["cnn"], "arch": "tinyvgg"}
    check_entry("tinyvgg", cfg)
    del cfg["channels"]
    with pytest.raises(CatdogError, match="^models.tinyvgg.channels is missing: arch tinyvgg needs it"):
        check_entry("tinyvgg", cfg)


def test_a_bad_param_leaves_every_output_in_place(tmp_path):
    """DVC deletes a stage's outputs before running it: a bad model key must stop `dvc repro` in `check`, before
    `train` could delete models/model.pt."""
    repo = copy_repo(tmp_path / "repo")
    params = load_params(repo / "params.yaml")
    params["model"] = "cnn"
    del params["models"]["cnn"]["channels"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "models").mkdir(exist_ok=True)
    (repo / "models" / "model.pt").write_bytes(b"yesterday's model")
    result = run(["dvc", "repro"], repo, check=False)
    assert result.returncode != 0
    assert "catdog: error: models.cnn.channels is missing: arch cnn needs it" in result.stdout + result.stderr
    assert (repo / "models" / "model.pt").read_bytes() == b"yesterday's model"
    assert not (repo / "data" / "synthetic").exists()  # nothing after check ran


def test_how_the_test_pass_runs_is_evaluates_own_param_and_never_retrains():
    """evaluate.* re-runs evaluate (and so plot, whose heatmaps evaluate computes), not train; what the model is
    trained on stays train.*."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["evaluate"]["params"] == ["evaluate"]
    assert not [p for p in stages["train"]["params"] if p.startswith("evaluate")]
    assert "train.inference" in stages["train"]["params"]  # the frozen backbone's features, which the head learns
    assert stages["plot"]["params"] == ["model"]  # it computes nothing on a device: it draws what evaluate wrote
    assert "plots/drawn.npz" in stages["plot"]["deps"] and "models/model.pt" not in stages["plot"]["deps"]
    assert set(PARAMS["evaluate"]) == {"device", "precision", "inference"}


def with_boxes(boxes):
    return changed(**{"data.boxes": boxes})


def test_data_boxes_may_be_the_file_generate_has_not_written_yet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/synthetic_boxes.csv here: `check` runs before `generate`
    assert PARAMS["data"]["boxes"] == "data/synthetic_boxes.csv"
    check_data(PARAMS)
    (tmp_path / "mine.csv").write_text("file,width,height,x0,y0,x1,y1\n")
    check_data(with_boxes("mine.csv"))
    check_data(changed(**{"data.boxes": DELETE}))  # an older params.yaml: no boxes


@pytest.mark.parametrize("boxes, message", [
    ("data/my_boxes.csv", (r"^data.boxes='data/my_boxes.csv' does not exist: point it at a CSV of animal boxes "
                           r"\(file,sha256,width,height,x0,y0,x1,y1\), or back at data/synthetic_boxes.csv$")),
    (None, "data.boxes=None must be the path of a CSV"),
    ("", "data.boxes='' must be the path of a CSV"),
    (["a.csv"], r"data.boxes=\['a.csv'\] must be the path of a CSV"),
])
def test_bad_data_boxes_is_one_line(tmp_path, monkeypatch, boxes, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CatdogError, match=message):
        check_data(with_boxes(boxes))


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    """`dvc exp run -S models.logistic.lr=0.00001` writes `lr: 1e-05`, which PyYAML alone reads as a string."""
    path = tmp_path / "params.yaml"
    path.write_text("models:\n  logistic: {lr: 1e-05, weight_decay: 5.6e-06, epochs: 3, batch_size: 32}\nname: 12e\n")
    params = load_params(path)
    assert params["models"]["logistic"] == {"lr": 1e-05, "weight_decay": 5.6e-06, "epochs": 3, "batch_size": 32}
    assert params["name"] == "12e"


def test_the_registry_module_names_no_builder_it_lacks():
    from catdog.models.architectures import ARCHITECTURES

    assert set(ARCHITECTURES) == set(registry.REGISTRY)
