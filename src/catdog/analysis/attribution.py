"""Where in the picture a model looks, and whether that is the animal.

Two methods, each architecture's registration (models/registry.py) saying which, and Grad-CAM's layer:
  * Grad-CAM on the last convolutional block for models that have one (`cnn`, the pretrained backbones), by
    Captum (well kept, and its dependencies -- torch, numpy, matplotlib, tqdm -- are already ours; `grad-cam`
    would add OpenCV, `torchcam` is CAM methods only);
  * occlusion for the others (the fully-connected models and the NumPy network, through its own forward pass):
    each patch of an 8x8 grid turned grey in turn, the drop of the score is that patch's share.
Both explain the score of one class: the logit for the dog class, its negative for the cat class. A map is
(N, S, S) at the model's input size S, positive where the pixels speak for that class.

With the animals' boxes (data.prepared.load_boxes) a map is scored:
  pointing_game       the share of images whose map peaks inside the box (a map with no positive value misses)
  attribution_in_box  the share of the positive attribution mass inside the box, averaged over images
  box_area_share      the box's share of the image area, averaged: the chance level of both
"""

import math

import numpy as np
import torch
from torch import nn

from catdog.data.tensors import to_input
from catdog.models.numpy_model import NumpyModel
from catdog.models.registry import gradcam_layer_path, method

FIXED_PER_CLASS = 4    # the gallery's fixed test images: the first of each class in the test split's order
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


def fixed_indices(labels, per_class: int = FIXED_PER_CLASS) -> np.ndarray:
    """The same test images for every model of the same data: the first `per_class` of each class."""
    labels = np.asarray(labels)
    return np.sort(np.concatenate([np.flatnonzero(labels == k)[:per_class] for k in np.unique(labels)]))


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


def box_masks(boxes: np.ndarray, side: int) -> np.ndarray:
    """bool (N, side, side): the pixels whose centre lies inside each box (x0, y0, x1, y1 in pixels at `side`)."""
    centres = np.arange(side) + 0.5
    x0, y0, x1, y1 = (boxes[:, k, None] for k in range(4))
    inside_x = (centres >= x0) & (centres < x1)
    inside_y = (centres >= y0) & (centres < y1)
    return inside_y[:, :, None] & inside_x[:, None, :]


def peak_in_box(maps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """bool (N,): the map's highest pixel (the first, on ties) is positive and inside the box."""
    inside = box_masks(boxes, maps.shape[-1]).reshape(len(maps), -1)
    flat = maps.reshape(len(maps), -1)
    peak = flat.argmax(1)
    return (flat[np.arange(len(flat)), peak] > 0) & inside[np.arange(len(flat)), peak]


def localisation(maps: np.ndarray, boxes: np.ndarray) -> dict:
    """pointing_game, attribution_in_box and their chance level box_area_share over the images that have a box
    (rows of NaN have none); n_boxes counts them. Empty when none has."""
    has_box = ~np.isnan(boxes).any(1)
    if not has_box.any():
        return {}
    maps, boxes = maps[has_box], boxes[has_box]
    inside = box_masks(boxes, maps.shape[-1])
    positive = np.clip(maps, 0, None)
    mass = positive.reshape(len(maps), -1).sum(1)
    in_box = (positive * inside).reshape(len(maps), -1).sum(1)
    share = np.divide(in_box, mass, out=np.zeros_like(mass), where=mass > 0)  # no positive mass: none in the box
    return {"pointing_game": round(float(peak_in_box(maps, boxes).mean()), 6),
            "attribution_in_box": round(float(share.mean()), 6),
            "box_area_share": round(float(inside.reshape(len(maps), -1).mean(1).mean()), 6),
            "n_boxes": int(has_box.sum())}


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
