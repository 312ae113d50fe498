"""Whether an attribution map (analysis.attribution) looks at the animal, and which test images and first-layer
units the figures show: numpy alone, so that `plot` draws without importing torch.

With the animals' boxes (data.prepared.load_boxes) a map is scored:
  pointing_game       the share of images whose map peaks inside the box (a map with no positive value misses)
  attribution_in_box  the share of the positive attribution mass inside the box, averaged over images
  box_area_share      the box's share of the image area, averaged: the chance level of both
"""

import numpy as np

FIXED_PER_CLASS = 4    # the gallery's fixed test images: the first of each class in the test split's order
# How much of the first layer the figures show: a linear model's template whole (None), the first units of a
# fully-connected layer, the first filters of a convolution.
FIRST_LAYER_SHOWN = {"template": None, "units": 16, "filters": 64}


def fixed_indices(labels, per_class: int = FIXED_PER_CLASS) -> np.ndarray:
    """The same test images for every model of the same data: the first `per_class` of each class."""
    labels = np.asarray(labels)
    return np.sort(np.concatenate([np.flatnonzero(labels == k)[:per_class] for k in np.unique(labels)]))


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
