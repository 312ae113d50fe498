"""Finding labelled images in a folder and decoding them once into fixed-size RGB arrays."""

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from catdog import CatdogError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Kaggle Dogs vs Cats names its files cat.123.jpg / dog.45.jpg: the label is the name up to the first separator.
FLAT_LABEL = re.compile(r"^([A-Za-z]+)[._\- ]")
DRAFT_SIDE = 512


def is_image(path: Path, root: Path) -> bool:
    """An image file by extension, not hidden and not inside a hidden folder (.DS_Store, .ipynb_checkpoints/)."""
    hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
    return not hidden and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def discover(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, classes) for an ImageFolder layout (one subfolder per class) or a flat folder of cat.1.jpg.

    Files are sorted so that the same folder always gives the same order, and so the same split.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CatdogError(f"data.images={str(folder)!r} is not a folder; point it at a folder of cat/dog images")
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    pairs = []
    if subdirs:
        for d in subdirs:
            pairs += [(p, d.name) for p in sorted(d.rglob("*")) if is_image(p, folder)]
    else:
        for p in sorted(folder.iterdir()):
            match = FLAT_LABEL.match(p.name)
            if is_image(p, folder) and match:
                pairs.append((p, match.group(1).lower()))
    classes = sorted({label for _, label in pairs})
    if len(classes) != 2:
        raise CatdogError(
            f"data.images={str(folder)!r} holds images of {len(classes)} class(es) {classes}; a binary classifier "
            "needs exactly two: one subfolder per class (cat/, dog/) or files named cat.1.jpg, dog.1.jpg"
        )
    index = {c: i for i, c in enumerate(classes)}
    return [p for p, _ in pairs], [index[label] for _, label in pairs], classes


def load_rgb(path: Path, sizes: list[int]) -> tuple[list[np.ndarray], float]:
    """The image as uint8 arrays of shape (3, s, s), one per size (squashed to a square, as the seeds' Resize
    did), and its brightness: the mean luminance (ITU-R 601, as PIL's "L") in [0, 1], the multi-task target."""
    with warnings.catch_warnings():
        # Past Image.MAX_IMAGE_PIXELS (about 89 megapixels) Pillow only warns; a decompression bomb is an error here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            # Decode big JPEGs at a reduced scale (still >= DRAFT_SIDE): far faster on multi-megapixel photos. A fixed
            # side, not max(sizes), so that adding a size to data.sizes never changes the pixels of the others.
            img.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))
            if img.getexif().get(0x0112, 1) != 1:  # exif_transpose copies even an upright image: a decode's cost
                img = ImageOps.exif_transpose(img)
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit and float greyscale: rescale, do not clip
                values = np.asarray(img, dtype=np.float64)
                img = Image.fromarray(np.uint8(np.clip(values * 255 / max(values.max(), 255), 0, 255)))
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                img = Image.new("RGB", rgba.size, (255, 255, 255))
                img.paste(rgba, mask=rgba.getchannel("A"))  # transparent pixels become white, not black
            elif img.mode != "RGB":  # convert copies even an RGB image
                img = img.convert("RGB")
            # the mean of uint8 values accumulates in float64, exactly: the same figure as converting first
            brightness = float(np.asarray(img.convert("L")).mean() / 255)
            arrays = [np.asarray(img.resize((s, s), Image.Resampling.BILINEAR)).transpose(2, 0, 1) for s in sizes]
            return arrays, brightness
