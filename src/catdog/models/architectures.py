"""The builders: each architecture of models/registry.py (a model entry's `arch`) names one here, taking the entry.

Every builder returns a model mapping a float batch (N, 3, S, S) in [-1, 1] to outputs (N, k): column 0 is the
cat/dog logit; a multi-task model adds column 1, the predicted brightness. Add an architecture by writing its
builder here and declaring it in REGISTRY (docs/models.md walks through it); add a model by adding one entry to
`models` in params.yaml. A builder may trust its entry: build_model checks it against the registry first.
"""

import torch
from torch import nn

from catdog import CatdogError
from catdog.models.numpy_model import NumpyModel
from catdog.models.registry import REGISTRY, check_entry


def _trunk(cfg: dict) -> tuple[nn.Sequential, int]:
    """Flatten, then one Linear + ReLU per entry of `hidden`; returns the layers and their output width."""
    layers, width = [nn.Flatten()], 3 * cfg["input_size"] ** 2
    for hidden in cfg.get("hidden", []):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers), width


def fully_connected(cfg: dict) -> nn.Module:
    """`hidden` ReLU layers, then one logit: logistic regression when `hidden` is empty."""
    trunk, width = _trunk(cfg)
    return trunk.append(nn.Linear(width, 1))


def convolutional(cfg: dict) -> nn.Module:
    """A small CNN trained from scratch: per entry of `channels` a conv3x3-BN-ReLU-maxpool block, then global
    average pooling and one logit. Pooling makes it see a pointed ear wherever it sits in the picture."""
    layers, width = [], 3
    for channels in cfg["channels"]:
        layers += [nn.Conv2d(width, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
                   nn.MaxPool2d(2)]
        width = channels
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 1))


class Pretrained(nn.Module):
    """An ImageNet backbone (models/pretrained.py) and a new one-logit head. `freeze: true` trains the head
    only: the backbone's weights and its batch-norm statistics stay as loaded. load_weights=False skips loading
    the ImageNet weights (pretrained.backbone), for a checkpoint that holds them all."""

    def __init__(self, cfg: dict, load_weights: bool = True):
        super().__init__()
        from catdog.models.pretrained import backbone  # late: torchvision is only needed by these models

        self.backbone, width = backbone(cfg["backbone"], cfg.get("weights_file"), load_weights,
                                        cfg.get("weights_sha256"))
        self.frozen = bool(cfg["freeze"])
        self.backbone.requires_grad_(not self.frozen)
        self.head = nn.Linear(width, 1)  # created after freezing, so it always trains

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class MultiTask(nn.Module):
    """Seed 004: a shared fully-connected trunk, head A for cat/dog (a logit), head B for brightness (in [0, 1])."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.trunk, width = _trunk(cfg)
        self.classify = nn.Linear(width, 1)
        self.brightness = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = self.trunk(x)
        return torch.cat([self.classify(shared), torch.sigmoid(self.brightness(shared))], dim=1)


def frozen_backbone(model) -> bool:
    """A pretrained model with `freeze: true`: its backbone, the costly part, never changes in training."""
    return bool(getattr(model, "frozen", False)) and isinstance(getattr(model, "backbone", None), nn.Module)


# Each registered architecture's builder, by the name its registration gives: a missing one fails at import.
ARCHITECTURES = {arch: globals()[spec.builder] for arch, spec in REGISTRY.items()}


def build_model(cfg: dict, name: str = "model", load_weights: bool = True):
    """The model of a `models` entry. load_weights=False builds a pretrained model without its ImageNet weights:
    enough to load a checkpoint, whose state_dict replaces every weight, and it works offline."""
    check_entry(name, cfg, unknown_keys=False)  # the `check` stage refuses unknown keys; a checkpoint may hold old ones
    builder = globals()[REGISTRY[cfg["arch"]].builder]
    try:
        if REGISTRY[cfg["arch"]].takes_load_weights:
            return builder(cfg, load_weights)
        return builder(cfg)
    except (KeyError, ValueError) as error:  # a builder's word on a knob the registry cannot judge, as one line
        raise CatdogError(f"models.{name} cannot be built: {error}") from None


def checkpoint_classes(path) -> list[str]:
    """A checkpoint's class names, [negative, positive], read without its weights: a memory map loads no tensor."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)["classes"]


def load_checkpoint(path) -> tuple[dict, nn.Module | NumpyModel]:
    """(checkpoint, its model with every weight loaded) from a file src/stages/train.py wrote. The model is built
    without ImageNet weights (the checkpoint replaces them all), so a pretrained one loads offline too."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: one line, not a pickle traceback
        raise CatdogError(f"cannot read the checkpoint {path} ({type(error).__name__}: {error})") from None
    if not (isinstance(checkpoint, dict) and {"model", "config", "classes", "state_dict"} <= checkpoint.keys()):
        raise CatdogError(f"{path} is not a catdog checkpoint (one that src/stages/train.py writes)")
    try:
        model = build_model(checkpoint["config"], checkpoint["model"], load_weights=False)
    except CatdogError as error:  # its entry, as it was trained: not one params.yaml can fix
        raise CatdogError(f"{path} holds a model this catdog cannot build ({error}): train it again, or load it "
                          "with the catdog version that trained it") from None
    model.load_state_dict(checkpoint["state_dict"])
    return checkpoint, model
