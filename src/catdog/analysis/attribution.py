"""Where in the picture a model looks, and whether that is the animal.

Two methods, each architecture's registration (models/registry.py) saying which, and Grad-CAM's layer:
  * Grad-CAM on the last convolutional block for models that have one (`cnn`, the pretrained backbones), by
    Captum (well kept, and its dependencies -- torch, numpy, matplotlib, tqdm -- are already ours; `grad-cam`
    would add OpenCV, `torchcam` is CAM methods only);
  * occlusion for the others (the fully-connected models and the NumPy network, through its own forward pass):
    each patch of an 8x8 grid turned grey in turn, the drop of the score is that patch's share.
Both explain the score of one class: the logit for the dog class, its negative for the cat class. A map is
(N, S, S) at the model's input size S, positive where the pixels speak for that class.
Scored against the animals' boxes by analysis.localisation, which needs no torch.
"""

import math

import numpy as np
import torch
from torch import nn

from catdog.analysis.localisation import (  # noqa: F401  (attribution.localisation etc., as before)
    FIRST_LAYER_SHOWN,
    box_masks,
    fixed_indices,
    localisation,
    peak_in_box,
)
from catdog.data.tensors import to_input
from catdog.models.numpy_model import NumpyModel
from catdog.models.registry import gradcam_layer_path, method

GRADCAM_BATCH = 32     # images per Grad-CAM forward and backward pass
OCCLUSION_BATCH = 256  # images occluded together, one patch at a time
OCCLUSION_GRID = 8     # patches per side: 16 px at 128, about an eye or an ear tip


def gradcam_layer(model: nn.Module, path: str) -> nn.Module:
    """The module at `path` ('backbone.1.layer4', '-5': attribute names and indices, negative from the end) of
    the model. The registry names the last convolutional block: its feature maps are the finest that still see
    whole ears and muzzles."""
    module = model
    for part in path.split("."):
        module = module[int(part)] if part.lstrip("-").isdigit() else getattr(module, part)
    return module


def attribute(model, cfg: dict, images: torch.Tensor, targets, device=torch.device("cpu")) -> np.ndarray:
    """Attribution maps float32 (N, S, S) of uint8 images (N, 3, S, S) for the classes `targets` (N,) (0 or 1)."""
    signs = torch.as_tensor(np.where(np.asarray(targets) == 1, 1.0, -1.0), dtype=torch.float32).view(-1, 1)
    if method(cfg) == "gradcam":
        return _gradcam(model, images, signs, device, gradcam_layer(model, gradcam_layer_path(cfg)))
    return _occlusion(model, images, signs, device)


def _gradcam(model: nn.Module, images, signs, device, layer: nn.Module) -> np.ndarray:
    from captum.attr import LayerAttribution, LayerGradCam  # late: captum takes a second to import

    model = model.to(device).eval()
    side = images.shape[-1]
    maps = []
    for start in range(0, len(images), GRADCAM_BATCH):
        x = to_input(images[start:start + GRADCAM_BATCH], device)
        sign = signs[start:start + GRADCAM_BATCH].to(device)
        cam = LayerGradCam(lambda batch: model(batch)[:, :1] * sign, layer).attribute(x, target=0)
        maps.append(LayerAttribution.interpolate(cam, (side, side), "bilinear")[:, 0].detach().float().cpu())
    return torch.cat(maps).numpy()


def _occlusion(model, images, signs, device) -> np.ndarray:
    """Occlusion on a grid of OCCLUSION_GRID x OCCLUSION_GRID patches: each patch of every image of a batch turned
    mid-grey (0 in [-1, 1]) in turn; the drop of the score is that patch's value. The patch map is then upsampled
    as Grad-CAM's is, from about the same grid (8x8 for cnn, 7x7 for MobileNetV2 at 224). Written here rather
    than Captum's Occlusion/FeatureAblation, which mask the whole batch tensor for every patch: 11 s for
    logistic's 240 test images against well under a second this way, which only touches the patch."""
    if isinstance(model, NumpyModel):
        device = torch.device("cpu")  # the NumPy network runs on the CPU
    else:
        model = model.to(device).eval()
    side = images.shape[-1]
    patch = math.ceil(side / OCCLUSION_GRID)
    grid = math.ceil(side / patch)
    maps = []
    with torch.no_grad():
        for start in range(0, len(images), OCCLUSION_BATCH):
            x = to_input(images[start:start + OCCLUSION_BATCH], device)
            sign = signs[start:start + OCCLUSION_BATCH, 0].to(device)
            score = model(x)[:, 0].float() * sign
            values = torch.zeros(len(x), 1, grid, grid, device=device)
            for i in range(grid):
                for j in range(grid):
                    where = (slice(None), slice(None), slice(i * patch, (i + 1) * patch),
                             slice(j * patch, (j + 1) * patch))
                    kept = x[where].clone()
                    x[where] = 0.0
                    values[:, 0, i, j] = score - model(x)[:, 0].float() * sign
                    x[where] = kept
            upsampled = nn.functional.interpolate(values, size=(side, side), mode="bilinear", align_corners=False)
            maps.append(upsampled[:, 0].cpu())
    return torch.cat(maps).numpy()


def first_layer(model, cfg: dict) -> tuple[str, np.ndarray]:
    """What the first layer learned, as pictures: ("template", (3, S, S)) for a linear model's weights,
    ("units", (U, 3, S, S)) for a fully-connected first layer, ("filters", (C, 3, k, k)) for a first convolution."""
    side = cfg["input_size"]
    if isinstance(model, NumpyModel):
        weights = model.net.params["W1"]
        kind = "template" if len(weights) == 1 else "units"
        return kind, weights.reshape(-1, 3, side, side)[0 if kind == "template" else slice(None)].astype(np.float32)
    first = next(m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    weights = first.weight.detach().float().cpu().numpy()
    if isinstance(first, nn.Conv2d):
        return "filters", weights
    if first.out_features == 1:
        return "template", weights.reshape(3, side, side)
    return "units", weights.reshape(-1, 3, side, side)


def drawn(model, cfg: dict, images: torch.Tensor, targets, device=torch.device("cpu")) -> dict:
    """What `plot` draws of the model, so that it draws without torch: its first layer as far as shown
    (first_layer, cut to FIRST_LAYER_SHOWN, and how many there are), and the attribution maps of the fixed test
    images (fixed_indices of the labels `targets`) for their true class. Arrays for files.write_npz."""
    kind, weights = first_layer(model, cfg)
    chosen = fixed_indices(targets)
    targets = np.asarray(targets)
    maps = attribute(model, cfg, images[torch.from_numpy(chosen)], targets[chosen], device)
    return {"first_layer_kind": np.array(kind), "first_layer": weights[:FIRST_LAYER_SHOWN[kind]],
            "first_layer_count": np.array(len(weights)), "indices": chosen, "targets": targets[chosen],
            "maps": maps, "method": np.array(method(cfg))}
