"""Finding the labelled images of a folder: one subfolder per class, or files named cat.1.jpg / dog.2.jpg."""

import re
from pathlib import Path

from catdog import CatdogError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Kaggle Dogs vs Cats names its files cat.123.jpg / dog.45.jpg: the label is the name up to the first separator.
FLAT_LABEL = re.compile(r"^([A-Za-z]+)[._\- ]")


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
