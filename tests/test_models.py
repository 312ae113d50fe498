"""Every entry of `models` in params.yaml builds, gives one logit per image, and can learn."""

import pytest
import torch
from torch import nn

from catdog.config import load_params
from catdog.models import ARCHITECTURES, build_model
from catdog.training import OPTIMIZERS
from conftest import ROOT

MODELS = load_params(ROOT / "params.yaml")["models"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_outputs_one_logit_per_image(name):
    cfg = MODELS[name]
    model = build_model(cfg)
    x = torch.rand(5, 3, cfg["input_size"], cfg["input_size"]) * 2 - 1
    assert model(x).shape == (5, 1)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_few_optimisation_steps_lower_the_loss(name):
    cfg = MODELS[name]
    torch.manual_seed(0)
    model = build_model(cfg)
    x = torch.rand(8, 3, cfg["input_size"], cfg["input_size"]) * 2 - 1
    y = torch.tensor([0.0, 1.0] * 4)
    optimizer = OPTIMIZERS[cfg["optimizer"]](model.parameters(), lr=cfg["lr"])
    losses = []
    for _ in range(20):
        loss = nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1e-3, losses


def test_logistic_regression_is_one_linear_layer_on_the_flattened_image():
    layers = [m for m in build_model(MODELS["logistic"]).modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in layers] == [(128 * 128 * 3, 1)]


def test_every_model_entry_names_a_registered_architecture():
    assert {cfg["arch"] for cfg in MODELS.values()} <= set(ARCHITECTURES)
