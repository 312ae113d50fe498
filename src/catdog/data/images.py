"""Finding the labelled images of a folder in the layouts people download, and refusing any other in one line.

    pets/cat/*.jpg  pets/dog/*.jpg              one folder per class (torchvision's ImageFolder; Kaggle PetImages:
                                                Cat/ and Dog/)
    train/cat.0.jpg  train/dog.0.jpg            flat: the label starts the file name (Kaggle Dogs vs. Cats)
    train/cats/  validation/dogs/ ...           split folders, each in one of the layouts above (TensorFlow's
    training_set/training_set/cats/ ...         cats_and_dogs_filtered; Kaggle's Cat and Dog, one level deeper):
                                                the classes are pooled across the splits, which prepare re-draws

A class is named by its folder or file-name label in lower case and singular (Cat, cats and CATS are `cat`), so
that a class is the same class in every split and whatever its spelling. The classes are ordered [negative,
positive]: data.positive_class is index 1, the class whose probability every model gives.
"""

import re
from pathlib import Path

from catdog import CatdogError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Kaggle Dogs vs Cats names its files cat.123.jpg / dog.45.jpg: the label is the name up to the first separator.
FLAT_LABEL = re.compile(r"^([A-Za-z]+)[._\- ]")
# Top-level folders that are splits, not classes, compared in lower case without separators and a trailing "set"
# or "data" (training_set, Validation, test-data). A folder such as test1/ is not one: Kaggle's test1 is unlabelled.
SPLIT_NAMES = {"train", "training", "val", "valid", "validation", "dev", "test", "testing", "eval", "evaluation"}
LAYOUTS = ("the layouts read are one folder per class (cat/, dog/), files named cat.1.jpg, and split folders "
           "(train, validation, test) holding either (docs/data.md)")


def is_hidden(name: str) -> bool:
    """.DS_Store, .ipynb_checkpoints/, and the __MACOSX/ folder that a zip made on a Mac unpacks beside the data."""
    return name.startswith(".") or name == "__MACOSX"


def is_image(path: Path, root: Path) -> bool:
    """An image file by extension, not hidden and not inside a hidden folder (.DS_Store, .ipynb_checkpoints/)."""
    hidden = any(is_hidden(part) for part in path.relative_to(root).parts)
    return not hidden and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def class_name(label: str) -> str:
    """A folder or file-name label as a class name: lower case and singular (Cats -> cat, puppies -> puppy). A plain
    English rule, enough for folder names; a word ending in ss, us or is keeps its s (grass, bus)."""
    name = label.strip().lower()
    if len(name) > 4 and name.endswith("ies"):
        return name[:-3] + "y"
    if len(name) > 4 and name.endswith(("sses", "ches", "shes", "xes")):
        return name[:-2]
    if len(name) > 3 and name.endswith("s") and not name.endswith(("ss", "us", "is")):
        return name[:-1]
    return name


def is_split(name: str) -> bool:
    key = re.sub(r"[\s_\-.]", "", name.lower())
    return key in SPLIT_NAMES or key.removesuffix("set") in SPLIT_NAMES or key.removesuffix("data") in SPLIT_NAMES


def _subfolders(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not is_hidden(d.name))


def _labelled(folder: Path, root: Path, positive: str) -> tuple[list[tuple[Path, str]], str]:
    """([(file, class name)], the layout's name) of a folder of class folders or of flat cat.1.jpg files."""
    subdirs = _subfolders(folder)
    if not subdirs:
        pairs = []
        for p in sorted(folder.iterdir()):
            match = FLAT_LABEL.match(p.name)
            if is_image(p, root) and match:
                pairs.append((p, class_name(match.group(1))))
        return pairs, "files named by class"
    classes = {class_name(d.name) for d in subdirs} | {class_name(positive)}
    pairs = []
    for d in subdirs:
        # A class folder's subfolders are read as part of that class (breeds, years), unless one is named like a
        # class: then these folders are not the classes, and reading them as such would give wrong labels.
        for p in sorted(d.rglob("*")):
            if is_image(p, root):
                pairs.append((p, class_name(d.name)))
            elif (p.is_dir() and class_name(p.name) in classes
                  and not any(is_hidden(part) for part in p.relative_to(root).parts)):
                inner = p.relative_to(root).as_posix()
                raise CatdogError(
                    f"data.images={str(root)!r}: the class folder {d.relative_to(root).as_posix()}/ holds the folder "
                    f"{inner}/, named like a class: {LAYOUTS}; point data.images at the folder whose subfolders are "
                    f"the classes ({p.parent.relative_to(root).as_posix()}/ here?), or name its parent folders as "
                    "splits (train, validation, test)")
    return pairs, "one folder per class"


def _split_content(split: Path) -> Path:
    """The folder that holds a split's images: Kaggle's Cat and Dog set nests each split in a folder of the same
    kind (training_set/training_set/cats/), which is then the split."""
    subdirs = _subfolders(split)
    loose = [p for p in split.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if len(subdirs) == 1 and is_split(subdirs[0].name) and not loose:
        return subdirs[0]
    return split


def discover(folder: Path, positive_class: str = "dog") -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, classes) of a folder in one of the layouts of the module docstring; classes are [negative,
    positive], positive_class matched in any case, singular or plural. Anything else is a one-line CatdogError.

    Files are sorted by class name, then by path, so that the same folder always gives the same order, and so the
    same split, however its class folders are spelt (Dog/ beside cat/ gives what dog/ beside cat/ gives).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CatdogError(f"data.images={str(folder)!r} is not a folder; point it at a folder of cat/dog images")
    subdirs = _subfolders(folder)
    splits = [d for d in subdirs if is_split(d.name)]
    if splits and len(splits) < len(subdirs):
        others = ", ".join(f"{d.name}/" for d in subdirs if not is_split(d.name))
        raise CatdogError(
            f"data.images={str(folder)!r} holds split folders ({', '.join(f'{d.name}/' for d in splits)}) beside "
            f"folders that are not splits ({others}): {LAYOUTS}; move or delete {others}, or point data.images at "
            "one folder of classes")
    if splits:
        pairs, layouts = [], set()
        for split in splits:
            content = _split_content(split)
            found, layout = _labelled(content, folder, positive_class)
            if not found:
                raise CatdogError(
                    f"data.images={str(folder)!r}: the split folder {content.relative_to(folder).as_posix()}/ holds "
                    f"no labelled images (no class folders, no files named cat.1.jpg): {LAYOUTS}; delete it (an "
                    "unlabelled test set cannot be trained or scored on), or add its class folders")
            pairs += found
            layouts.add(layout)
        layout = f"split folders {', '.join(d.name for d in splits)} of {' and '.join(sorted(layouts))}"
    else:
        pairs, layout = _labelled(folder, folder, positive_class)
    pairs.sort(key=lambda pair: pair[1])  # stable: each class keeps its sorted paths
    classes = sorted({label for _, label in pairs})
    if len(classes) != 2:
        raise CatdogError(
            f"data.images={str(folder)!r} holds images of {len(classes)} class(es) {classes} ({layout}); a binary "
            "classifier needs exactly two: one subfolder per class (cat/, dog/) or files named cat.1.jpg, dog.1.jpg, "
            "or split folders (train/, validation/) of either")
    positive = class_name(positive_class)
    if positive not in classes:
        raise CatdogError(
            f"data.positive_class={positive_class!r} is not a class of data.images={str(folder)!r}, whose classes "
            f"are {', '.join(classes)} ({layout}); set data.positive_class to the one whose probability the model "
            "should give")
    classes = [c for c in classes if c != positive] + [positive]
    index = {c: i for i, c in enumerate(classes)}
    return [p for p, _ in pairs], [index[label] for _, label in pairs], classes
