"""Pictures of what a model learned (attribution.first_layer) and of where it looks (attribution maps over the
images), as PNGs a person reads at a glance."""

import math
from pathlib import Path

import numpy as np
from PIL import Image

from catdog.analysis.figures import plt, save
from catdog.analysis.localisation import FIRST_LAYER_SHOWN

HEATMAP = "inferno"


def _scaled(picture: np.ndarray) -> np.ndarray:
    """(3, H, W) weights -> an RGB image (H, W, 3) in [0, 1], stretched to its own min and max."""
    low, high = picture.min(), picture.max()
    return ((picture - low) / (high - low if high > low else 1)).transpose(1, 2, 0)


def _grid(n: int, columns: int) -> tuple[int, int]:
    columns = min(n, columns)
    return math.ceil(n / columns), columns


def learned(kind: str, weights: np.ndarray, title: str, path: Path, classes=("cat", "dog"),
            count: int | None = None) -> None:
    """The first layer as pictures: a linear model's template per colour channel (one shared, centred colour
    scale) and combined; or the first units or convolution filters (FIRST_LAYER_SHOWN), each stretched to its own
    range. classes: [negative, positive], the direction a positive weight pushes the logit. count: how many units
    or filters the layer has, when `weights` holds only the first of them."""
    if kind == "template":
        limit = float(np.abs(weights).max()) or 1.0
        fig, axes = plt.subplots(1, 4, figsize=(14, 3.9), layout="constrained")
        for ax, channel, name in zip(axes, weights, ("red", "green", "blue")):
            shown = ax.imshow(channel, cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(f"{name} channel")
        fig.colorbar(shown, ax=axes[:3], shrink=0.85,
                     label=f"weight (red: towards {classes[1]}, blue: towards {classes[0]})")
        axes[3].imshow(_scaled(weights))
        axes[3].set_title("combined (RGB, min-max scaled)")
        for ax in axes:
            ax.set(xticks=[], yticks=[])
        fig.suptitle(f"{title}\nthe weights as an image: the template the logit compares each picture with")
        save(fig, path)
        return
    shown, count = weights[:FIRST_LAYER_SHOWN[kind]], count or len(weights)
    lines, columns = _grid(len(shown), 8)
    size = 1.7 if kind == "units" else 1.0
    fig, axes = plt.subplots(lines, columns, figsize=(size * columns + 0.4, size * lines + 1.0), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for k, (ax, picture) in enumerate(zip(axes.flat, shown)):
        ax.imshow(_scaled(picture), interpolation="nearest")
        ax.set_title(f"{'unit' if kind == 'units' else 'filter'} {k}", fontsize=8)
    if kind == "units":
        what = f"the first {len(shown)} of {count} first-layer units" if count > len(shown) \
            else f"the {count} first-layer units"
    else:
        what = f"{len(shown)} of the first convolution's {count} filters " \
               f"({weights.shape[-2]}x{weights.shape[-1]} px)"
    fig.suptitle(f"{title}\n{what}: each one's weights as an RGB image, scaled to its own min and max")
    save(fig, path)


def overlay(ax, image: np.ndarray, heat: np.ndarray, box=None, limit: float | None = None):
    """Draw the RGB image uint8 (H, W, 3) with the positive part of `heat` (any size, resized to the image) over
    it, scaled so that 1 is `limit` (default: its own peak), and the box (x0, y0, x1, y1 in image pixels)."""
    height, width = image.shape[:2]
    positive = np.clip(heat, 0, None).astype(np.float32)
    peak = limit if limit else float(positive.max()) or 1.0
    resized = np.asarray(Image.fromarray(positive / peak).resize((width, height), Image.Resampling.BILINEAR))
    heat = np.clip(resized, 0, 1)
    colours = plt.get_cmap(HEATMAP)(heat)
    colours[..., 3] = 0.8 * np.sqrt(heat)  # transparent where there is no evidence: the picture stays readable
    ax.imshow(image)
    ax.imshow(colours)
    shown = plt.cm.ScalarMappable(plt.Normalize(0, 1), HEATMAP)
    if box is not None and not np.isnan(box).any():
        x0, y0, x1, y1 = box
        ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="lime",
                                   linewidth=1.5))
    ax.set(xticks=[], yticks=[])
    return shown


def heatmap_gallery(images, maps, captions: list[str], title: str, path: Path, boxes=None) -> None:
    """One panel per image (uint8 (N, 3, H, W)): its attribution map (N, S, S) over it, the animal's box in green
    where known (pixels at H, W), its caption under it; one colour bar for all."""
    lines, columns = _grid(len(images), 4)
    fig, axes = plt.subplots(lines, columns, figsize=(2.9 * columns + 0.8, 3.2 * lines + 0.8), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    shown = None
    for k, ax in enumerate(axes.flat[:len(images)]):
        ax.axis("on")
        shown = overlay(ax, np.asarray(images[k]).transpose(1, 2, 0), maps[k],
                        None if boxes is None else boxes[k])
        ax.set_xlabel(captions[k], fontsize=8)
    fig.colorbar(shown, ax=axes, shrink=0.6, label="attribution for the true class (1 = the image's peak)")
    legend = "; green: where the animal is" if boxes is not None else ""
    fig.suptitle(f"{title}\nwhere the model looks{legend}")
    save(fig, path)
