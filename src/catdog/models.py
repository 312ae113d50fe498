"""The model registry: an architecture name (a model entry's `arch`) maps to a builder taking that entry.

Every builder returns a torch module mapping a float batch (N, 3, S, S) in [-1, 1] to N logits, shape (N, 1).
Add an architecture by adding one builder here; add a model by adding one entry to `models` in params.yaml.
"""

from torch import nn


def fully_connected(cfg: dict) -> nn.Module:
    """Flatten, then `hidden` ReLU layers, then one logit: logistic regression when `hidden` is empty."""
    layers, width = [nn.Flatten()], 3 * cfg["input_size"] ** 2
    for hidden in cfg.get("hidden", []):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


ARCHITECTURES = {
    "fc": fully_connected,
}


def build_model(cfg: dict) -> nn.Module:
    return ARCHITECTURES[cfg["arch"]](cfg)
