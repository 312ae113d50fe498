"""Wrong params fail at once with one line that names the key and the accepted values."""

import copy

import pytest

from catdog import CatdogError
from catdog.config import architectures, check_data, load_params, model_config
from catdog.models.architectures import ARCHITECTURES
from conftest import ROOT

PARAMS = load_params(ROOT / "params.yaml")


def with_changes(**changes):
    params = copy.deepcopy(PARAMS)
    params["models"]["logistic"].update(changes)
    return params


def test_the_default_model_is_valid():
    name, cfg = model_config(PARAMS)
    assert name == PARAMS["model"] and cfg == PARAMS["models"][name]


def test_check_reads_the_architectures_of_the_registry_without_importing_torch():
    assert architectures() == list(ARCHITECTURES)


def test_unknown_model_lists_the_valid_ones():
    params = copy.deepcopy(PARAMS)
    params["model"] = "resnet9000"
    with pytest.raises(CatdogError, match="resnet9000.*valid: ") as error:
        model_config(params)
    assert str(error.value).endswith(", ".join(sorted(PARAMS["models"])))


@pytest.mark.parametrize("key, value, message", [
    ("lr", 0, "models.logistic.lr=0 must be a positive number"),
    ("batch_size", -1, "models.logistic.batch_size=-1 must be a positive integer or 'full'"),
    ("epochs", 2.5, "models.logistic.epochs=2.5 must be a positive integer"),
    ("optimizer", "rmsprop", "optimizer='rmsprop' is unknown; valid: sgd, adam"),
    ("input_size", "96", r"models.logistic.input_size='96' must be a square side in pixels from 8 to 4096"),
    ("input_size", 4, r"input_size=4 must be a square side in pixels from 8 to 4096 \(data.sizes=\[64, 128\] are "
                      r"prepared ahead, others on first use\)"),
    ("arch", "transformer", "arch='transformer' is unknown"),
])
def test_bad_model_values_are_named(key, value, message):
    with pytest.raises(CatdogError, match=message):
        model_config(with_changes(**{key: value}))


def with_boxes(boxes):
    params = copy.deepcopy(PARAMS)
    params["data"]["boxes"] = boxes
    return params


def test_data_boxes_may_be_the_file_generate_has_not_written_yet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/synthetic_boxes.csv here: `check` runs before `generate`
    assert PARAMS["data"]["boxes"] == "data/synthetic_boxes.csv"
    check_data(PARAMS)
    (tmp_path / "mine.csv").write_text("file,width,height,x0,y0,x1,y1\n")
    check_data(with_boxes("mine.csv"))
    params = copy.deepcopy(PARAMS)
    del params["data"]["boxes"]  # an older params.yaml: no boxes
    check_data(params)


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
