"""Wrong params fail at once with one line that names the key and the accepted values."""

import copy

import pytest

from catdog import CatdogError
from catdog.config import load_params, model_config
from conftest import ROOT

PARAMS = load_params(ROOT / "params.yaml")


def with_changes(**changes):
    params = copy.deepcopy(PARAMS)
    params["models"]["logistic"].update(changes)
    return params


def test_the_default_model_is_valid():
    name, cfg = model_config(PARAMS)
    assert name == PARAMS["model"] and cfg == PARAMS["models"][name]


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
    ("input_size", 96, r"input_size=96 is not cached by prepare; use one of data.sizes=\[64, 128, 224\]"),
    ("arch", "transformer", "arch='transformer' is unknown"),
])
def test_bad_model_values_are_named(key, value, message):
    with pytest.raises(CatdogError, match=message):
        model_config(with_changes(**{key: value}))
