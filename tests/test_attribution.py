"""Where a model looks: the localisation scores on maps with known answers, Grad-CAM and occlusion on models
built so that only one region can matter, and every model's attribution_figures."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from catdog.analysis import attribution, attribution_figures
from catdog.models.architectures import build_model
from catdog.models.registry import OCCLUSION, REGISTRY, GradCam, example_entry, gradcam_layer_path
from conftest import committed_params

MODELS = committed_params()["models"]
PNG = b"\x89PNG\r\n\x1a\n"


def test_scores_of_hand_made_maps():
    boxes = np.array([[0, 0, 4, 4], [4, 4, 8, 8], [2, 2, 6, 6], [np.nan] * 4], dtype=np.float32)
    maps = np.zeros((4, 8, 8), dtype=np.float32)
    maps[0, 1, 1] = 3.0      # peak in its box; all the mass there
    maps[0, 6, 6] = 1.0      # ... no: a quarter outside
    maps[1, 0, 0] = 2.0      # peak outside its box, half the mass inside
    maps[1, 5, 5] = 2.0 - 1e-3
    maps[1, 7, 7] = -5.0     # negative attribution counts for neither
    maps[2] = -1.0           # no positive value at all: a miss, nothing in the box
    maps[3, 0, 0] = 9.0      # no box: left out
    scores = attribution.localisation(maps, boxes)
    assert scores["n_boxes"] == 3
    assert scores["pointing_game"] == pytest.approx(1 / 3, abs=1e-6)
    assert scores["attribution_in_box"] == pytest.approx((3 / 4 + (2 - 1e-3) / (4 - 1e-3) + 0) / 3, abs=1e-6)
    assert scores["box_area_share"] == pytest.approx(16 / 64, abs=1e-6)
    assert attribution.localisation(maps[3:], boxes[3:]) == {}


def test_a_box_holds_the_pixels_whose_centre_is_inside():
    inside = attribution.box_masks(np.array([[1.5, 0.0, 3.0, 2.6]]), 4)[0]
    assert inside.astype(int).tolist() == [[0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]


class OneCorner(nn.Module):
    """A CNN that sees only the top-left quarter: its convolution's output elsewhere is multiplied by zero before
    the last ReLU, whose output Grad-CAM weighs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.relu, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Linear(4, 1)

    def forward(self, x):
        features = self.conv(x)
        mask = torch.zeros_like(features)
        mask[..., :8, :8] = 1
        return self.head(self.relu(features * mask).mean((2, 3)))


def images(n=6, side=16):
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_gradcam_peaks_where_the_model_looks():
    model = OneCorner()
    x = images()
    with torch.no_grad():
        logits = model(x.float() / 127.5 - 1)[:, 0]
    targets = (logits > 0).numpy().astype(int)  # explain the class each image gets: positive evidence exists
    maps = attribution._gradcam(model, x, torch.tensor(np.where(targets == 1, 1.0, -1.0)).view(-1, 1),
                                torch.device("cpu"), model.relu)
    assert maps.shape == (6, 16, 16) and maps.max() > 0
    corner = np.array([[0, 0, 8, 8]] * 6, dtype=np.float32)
    assert attribution.peak_in_box(maps, corner).all()
    assert attribution.localisation(maps, corner)["attribution_in_box"] > 0.9


def test_occlusion_of_a_linear_model_peaks_on_its_only_weights():
    cfg = {**MODELS["logistic"], "input_size": 16}
    model = build_model(cfg)
    with torch.no_grad():
        model[-1].weight.zero_()
        model[-1].weight.view(3, 16, 16)[:, 10:14, 2:6] = 1.0  # it only counts the brightness there: 2x2 patches
    x = images()
    x[:3, :, 10:14, 2:6], x[3:, :, 10:14, 2:6] = 255, 0  # bright there: evidence for dog; dark: for cat
    maps = attribution.attribute(model, cfg, x, np.ones(6, dtype=int))
    box = np.array([[2, 10, 6, 14]] * 6, dtype=np.float32)
    assert attribution.peak_in_box(maps, box).tolist() == [True] * 3 + [False] * 3
    assert (maps[3:] <= 0).all()  # dark there: nothing speaks for dog
    near = np.zeros((16, 16), dtype=bool)
    near[8:16, 0:8] = True  # the weights' patches and half a patch around them, where upsampling spreads them
    assert (maps[:, ~near] == 0).all() and (maps[:3, 10:14, 2:6] > 0).all()
    cat_maps = attribution.attribute(model, cfg, x, np.zeros(6, dtype=int))
    np.testing.assert_allclose(cat_maps, -maps, atol=1e-5)


def test_fixed_images_are_the_first_of_each_class():
    assert attribution.fixed_indices([1, 1, 0, 1, 0, 0, 0, 1, 1], per_class=2).tolist() == [0, 1, 2, 4]


TINY = {"logistic": {}, "shallow": {"hidden": [8]}, "deep": {}, "mlp": {"hidden": [20, 6]},
        "multitask": {"hidden": [8]}, "numpy_deep": {"hidden": [6, 4], "activations": ["relu", "tanh", "sigmoid"]},
        "cnn": {"channels": [4, 8]}, "mobilenet_v2_frozen": {}}


@pytest.mark.parametrize("name", list(TINY))
def test_every_model_has_its_pictures(tmp_path, name):
    cfg = {**MODELS[name], **TINY[name], "input_size": 32}
    torch.manual_seed(0)
    np.random.seed(0)
    model = build_model(cfg, name, load_weights=False)
    kind, weights = attribution.first_layer(model, cfg)
    expected = {"fc": "template" if not cfg.get("hidden") else "units", "multitask": "units", "numpy": "units",
                "cnn": "filters", "pretrained": "filters"}[cfg["arch"]]
    assert kind == expected
    assert weights.shape[-3:] == ((3, 32, 32) if kind != "filters" else (3, 3, 3))
    attribution_figures.learned(kind, weights, f"{name} (test accuracy 0.500)", tmp_path / "learned.png")
    x = images(4, 32)
    maps = attribution.attribute(model, cfg, x, np.array([0, 1, 0, 1]))
    assert maps.shape == (4, 32, 32) and np.isfinite(maps).all()
    boxes = np.array([[4, 4, 20, 28]] * 3 + [[np.nan] * 4], dtype=np.float32)
    attribution_figures.heatmap_gallery(x, maps, ["a\nb"] * 4, name, tmp_path / "heatmaps.png", boxes)
    for png in ("learned.png", "heatmaps.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_every_registered_architecture_is_attributed_as_its_registration_says(monkeypatch, arch):
    cfg = example_entry(arch)
    torch.manual_seed(0)
    np.random.seed(0)
    model = build_model(cfg, arch, load_weights=False)
    ran = []
    for name in ("_gradcam", "_occlusion"):
        real = getattr(attribution, name)
        monkeypatch.setattr(attribution, name, lambda *args, real=real, name=name: ran.append(name) or real(*args))
    maps = attribution.attribute(model, cfg, images(3, 32), np.array([0, 1, 0]))
    registered = REGISTRY[arch].attribution
    assert ran == ["_gradcam" if isinstance(registered, GradCam) else "_occlusion"]
    assert maps.shape == (3, 32, 32) and np.isfinite(maps).all()
    if isinstance(registered, GradCam):  # the layer is a block of feature maps, not the pooled vector
        shapes = []
        layer = attribution.gradcam_layer(model, gradcam_layer_path(cfg))
        layer.register_forward_hook(lambda module, inputs, output: shapes.append(output.shape))
        model(torch.zeros(1, 3, 32, 32))
        assert len(shapes) == 1 and len(shapes[0]) == 4 and shapes[0][-1] > 0


def test_a_new_architecture_gets_the_attribution_it_registers(monkeypatch):
    """A CNN registered under another name with Grad-CAM is explained by Grad-CAM: no name is special."""
    monkeypatch.setitem(REGISTRY, "tinyvgg", dataclasses.replace(REGISTRY["cnn"], attribution=GradCam("-5")))
    cfg = {**example_entry("cnn"), "arch": "tinyvgg"}
    assert attribution.method(cfg) == "gradcam"
    monkeypatch.setitem(REGISTRY, "tinyvgg", dataclasses.replace(REGISTRY["cnn"], attribution=OCCLUSION))
    assert attribution.method(cfg) == "occlusion"
    model = build_model(cfg, "tinyvgg")
    assert attribution.attribute(model, cfg, images(2, 32), np.array([0, 1])).shape == (2, 32, 32)


@pytest.mark.parametrize("name", ["logistic", "shallow", "numpy_deep"])
def test_occlusion_equals_captums_feature_ablation_on_the_same_patches(name):
    from captum.attr import FeatureAblation

    cfg = {**MODELS[name], **TINY[name], "input_size": 24}
    torch.manual_seed(0)
    np.random.seed(0)
    model = build_model(cfg, name)
    x, targets = images(5, 24), np.array([0, 1, 1, 0, 1])
    maps = attribution.attribute(model, cfg, x, targets)
    patch = 3  # 24 px on an 8x8 grid
    rows = torch.arange(24) // patch
    mask = (rows[:, None] * 8 + rows[None, :]).view(1, 1, 24, 24)
    sign = torch.tensor(np.where(targets == 1, 1.0, -1.0), dtype=torch.float32).view(-1, 1)
    reference = FeatureAblation(lambda batch: model(batch)[:, :1] * sign).attribute(
        x.float() / 127.5 - 1, baselines=0.0, target=0, feature_mask=mask)[:, 0, ::patch, ::patch]
    upsampled = torch.nn.functional.interpolate(reference[:, None].float(), size=(24, 24), mode="bilinear")[:, 0]
    np.testing.assert_allclose(maps, upsampled.numpy(), rtol=1e-4, atol=1e-6)


def test_the_template_legend_names_the_positive_class(tmp_path, monkeypatch):
    """A linear model's weights push the logit of classes[1]: red is towards it, whichever class data.positive_class
    made it."""
    shown = []
    monkeypatch.setattr(attribution_figures, "save", lambda fig, path: shown.append(fig))
    weights = np.random.default_rng(0).normal(size=(3, 8, 8)).astype(np.float32)
    for classes in (["cat", "dog"], ["dog", "cat"]):
        attribution_figures.learned("template", weights, "logistic", tmp_path / "learned.png", classes)
    labels = [fig.axes[-1].get_ylabel() for fig in shown]  # the colour bar's axis, added last
    assert labels == ["weight (red: towards dog, blue: towards cat)", "weight (red: towards cat, blue: towards dog)"]
