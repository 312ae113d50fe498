"""The prepared dataset: a stratified split and uint8 arrays on disk, decoded once and read by every later stage.

Layout of data/prepared/:  x{size}_{split}.npy        uint8 (N, 3, size, size)
                           y_{split}.npy              uint8 (N,) class index
                           brightness_{split}.npy     float32 (N,) mean luminance in [0, 1]
                           boxes_{split}.npy          float32 (N, 4) the animal's box x0, y0, x1, y1 as fractions
                                                      of the image's width and height, NaN where it has none; only
                                                      when data.boxes gave at least one image a box (load_boxes)
                           manifest.json        classes, sizes, the files of each split, skipped files, boxes

Boxes come from a CSV (data.boxes; generate writes data/synthetic_boxes.csv) with the columns
file,sha256,width,height,x0,y0,x1,y1: the file relative to data.images, the sha256 of its bytes (optional), the
image's size as displayed (after EXIF orientation) and the box in its pixels, x1 and y1 exclusive. Every image is
squashed to a square, so a box as fractions of width and height is the box at any cached size times that size.
"""

import csv
import hashlib
import importlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from catdog import CatdogError
from catdog.config import check_fractions
from catdog.data.decode import decoder_key, decoding, write_npy_rows
from catdog.files import atomic_dir, write_json
from catdog.paths import OTHER_SIZES, PREPARED_DIR, repo_root

SPLITS = ("train", "val", "test")
BOX_COLUMNS = ("file", "width", "height", "x0", "y0", "x1", "y1")  # and sha256, optional
BOX_HEADER = "file,sha256,width,height,x0,y0,x1,y1"
UNUSED_REASONS = ("not_in_folder", "left_out", "sha256_differs", "size_differs")  # why a row of data.boxes is unused
EXAMPLES = 10  # unused rows named per reason in manifest.json


def split_indices(labels, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Stratified train/val/test indices; the same labels and seed always give the same split."""
    # late: sklearn takes about a second to import, which the stages that only read the prepared data skip
    from sklearn.model_selection import train_test_split

    check_fractions(val_fraction, test_fraction)
    labels = np.asarray(labels)
    index = np.arange(len(labels))
    n_test, n_val = round(test_fraction * len(labels)), round(val_fraction * len(labels))  # 2400 -> 1920/240/240
    try:
        rest, test = train_test_split(index, test_size=n_test, stratify=labels, random_state=seed)
        train, val = train_test_split(rest, test_size=n_val, stratify=labels[rest], random_state=seed)
    except ValueError as error:  # sklearn's word for "too few images of a class for this split"
        raise CatdogError(
            f"{len(labels)} usable images are too few for val_fraction={val_fraction}, "
            f"test_fraction={test_fraction} ({error}); add images or raise the fractions"
        ) from None
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def read_boxes(path: Path) -> dict[str, dict]:
    """The rows of a boxes CSV by file name: {file: {"sha256": str or None, "size": (w, h), "box": (x0, y0, x1,
    y1)}}. A malformed file is a CatdogError naming the line, found before any image is decoded."""
    path = Path(path)
    fix = f"fix or delete that row of {path} (columns {BOX_HEADER}, sha256 optional; data.boxes)"
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in BOX_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise CatdogError(f"{path} line 1: no column {', '.join(missing)}; the header must be {BOX_HEADER} "
                                  "(sha256 may be left out)")
            rows = {}
            for row in reader:
                line = reader.line_num
                name = (row["file"] or "").strip()
                if not name:
                    raise CatdogError(f"{path} line {line}: no file name; {fix}")
                if name in rows:
                    raise CatdogError(f"{path} line {line}: {name} has a row already (line {rows[name]['line']}); "
                                      "keep one box per image")
                try:
                    w, h, x0, y0, x1, y1 = (float(row[c]) for c in BOX_COLUMNS[1:])
                except (TypeError, ValueError):
                    values = ", ".join(f"{c}={row[c]!r}" for c in BOX_COLUMNS[1:])
                    raise CatdogError(f"{path} line {line}: a value is not a number ({values}); {fix}") from None
                if not (w >= 1 and h >= 1 and w == int(w) and h == int(h)):
                    raise CatdogError(f"{path} line {line}: width={row['width']}, height={row['height']} must be the "
                                      f"image's size in whole pixels; {fix}")
                if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
                    raise CatdogError(f"{path} line {line}: box x0={row['x0']}, y0={row['y0']}, x1={row['x1']}, "
                                      f"y1={row['y1']} is empty or outside the {int(w)}x{int(h)} image (need "
                                      f"0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height, in pixels); {fix}")
                sha256 = (row.get("sha256") or "").strip().lower() or None
                rows[name] = {"sha256": sha256, "size": (int(w), int(h)), "box": (x0, y0, x1, y1), "line": line}
    except UnicodeDecodeError:
        raise CatdogError(f"{path} is not a UTF-8 text CSV; data.boxes must point at a CSV with the columns "
                          f"{BOX_HEADER}") from None
    except csv.Error as error:
        raise CatdogError(f"{path} line {reader.line_num}: {error}; {fix}") from None
    return rows


def _match_boxes(rows: dict, names: list[str], usable, digests: dict, viewed: dict):
    """(boxes float32 (len(names), 4) as fractions of width and height, NaN where none; {reason: [file, ...]} for
    the rows not used)."""
    box = np.full((len(names), 4), np.nan, dtype=np.float32)
    unused = {reason: [] for reason in UNUSED_REASONS}
    for i in usable:
        row = rows.get(names[i])
        if row is None:
            continue
        # a row for another version of the file (edited, resized, re-encoded) would put the box in the wrong place
        if row["sha256"] is not None and row["sha256"] != digests[i]:
            unused["sha256_differs"].append(names[i])
        elif row["size"] != viewed[i]:
            unused["size_differs"].append(names[i])
        else:
            width, height = viewed[i]
            box[i] = np.divide(row["box"], (width, height, width, height))
    used = {names[i] for i in usable}
    unused["left_out"] = [n for n in names if n in rows and n not in used]  # unreadable, a duplicate or a conflict
    found = set(names)
    unused["not_in_folder"] = [f for f in rows if f not in found]  # in the CSV's order
    return box, unused


def prepare(files, labels, classes, root: Path, sizes, val_fraction, test_fraction, seed, out_dir=PREPARED_DIR,
            workers=None, boxes=None):
    """Decode every file once (all cores), drop unreadable files, byte-identical duplicates and label conflicts
    (the same bytes under two classes), split the rest, and write the arrays atomically. `boxes`: a boxes CSV
    (module docstring) or None; a path that does not exist means no boxes. Returns the manifest, which includes
    the report of what was left out and of the boxes."""
    check_fractions(val_fraction, test_fraction)
    workers = workers or os.cpu_count()
    name = [str(Path(f).relative_to(root)) for f in files]
    box_rows = read_boxes(boxes) if boxes is not None and Path(boxes).is_file() else {}
    with atomic_dir(out_dir) as tmp:
        # The workers write every image's arrays into one flat file per size, row i for file i, with plain writes,
        # and the split files are then written from it with plain reads and writes: the data only passes through
        # the page cache, which the kernel writes back and reclaims as it needs. A writable memory map of these
        # files would count every page touched in the process's resident memory (about 5.3 GB for 25,000 images
        # at 64, 128 and 224 px).
        flat = {s: tmp / f"all{s}.u8" for s in dict.fromkeys(sizes)}
        for path in flat.values():
            path.touch()
        brightness = np.zeros(len(files), dtype=np.float32)
        labels = np.asarray(labels, dtype=np.uint8)
        decoded_ok, skipped = {}, []
        with decoding(files, sizes, flat, workers) as decoded:
            # The split needs sklearn, about a second to import: this process imports it while the workers decode.
            threading.Thread(target=importlib.import_module, args=("sklearn.model_selection",), daemon=True).start()
            for i, (digest, result) in enumerate(decoded):
                if digest is None:
                    skipped.append({"file": name[i], "reason": result})
                else:
                    decoded_ok[i] = digest, result
        copies = {}  # the files of each digest, in file order
        for i, (digest, _) in decoded_ok.items():
            copies.setdefault(digest, []).append(i)
        usable, duplicates, conflicts, first_of, viewed = [], [], [], {}, {}
        for i, (digest, result) in decoded_ok.items():
            other = next((j for j in copies[digest] if labels[j] != labels[i]), None)
            if other is not None:  # the same picture under two classes has no label to learn: every copy goes
                conflicts.append({"file": name[i], "same_bytes_as": name[other]})
            elif digest in first_of:  # kept once, so the same picture can never sit in two splits
                duplicates.append({"file": name[i], "duplicate_of": name[first_of[digest]]})
            else:
                first_of[digest] = i
                usable.append(i)
                brightness[i], viewed[i] = result
        usable = np.asarray(usable, dtype=np.int64)
        for k, c in enumerate(classes):
            if not (labels[usable] == k).any():
                raise CatdogError(f"class {c!r} in {root} has no usable image (of all classes, {len(skipped)} "
                                  f"unreadable, {len(duplicates)} duplicate and {len(conflicts)} conflicting "
                                  "file(s) left out); add images of it")
        splits = split_indices(labels[usable], val_fraction, test_fraction, seed)
        box, unused = _match_boxes(box_rows, [Path(n).as_posix() for n in name], usable,
                                   {i: digest for digest, i in first_of.items()}, viewed)
        has_box = ~np.isnan(box[:, 0])
        digest_of = {i: digest for digest, i in first_of.items()}
        counts = {"found": len(files), "used": len(usable), "skipped": len(skipped), "duplicates": len(duplicates)}
        left_out = {"skipped": skipped, "duplicates": duplicates}
        if conflicts:  # absent when there are none, so that such a folder's manifest is the one it always was
            counts["conflicts"], left_out["conflicts"] = len(conflicts), conflicts
        manifest = {"classes": classes, "sizes": list(sizes), "images": str(root), "counts": counts,
                    **left_out, "splits": {},
                    "boxes": {"source": None if boxes is None else str(boxes), "rows": len(box_rows),
                              "matched": int(has_box.sum()), "per_split": {},
                              "unused": {reason: len(names) for reason, names in unused.items()},
                              "unused_examples": {reason: names[:EXAMPLES] for reason, names in unused.items()
                                                  if names}}}
        for split, positions in splits.items():
            rows = usable[positions]
            for s in sizes:
                write_npy_rows(flat[s], rows, (3, s, s), tmp / f"x{s}_{split}.npy")
            np.save(tmp / f"y_{split}.npy", labels[rows])
            np.save(tmp / f"brightness_{split}.npy", brightness[rows])
            if has_box.any():  # none at all: no files, so that load_boxes says there are none
                np.save(tmp / f"boxes_{split}.npy", box[rows])
            manifest["boxes"]["per_split"][split] = int(has_box[rows].sum())
            manifest["splits"][split] = {
                "count": len(rows),
                "per_class": {c: int((labels[rows] == k).sum()) for k, c in enumerate(classes)},
                "files": [name[r] for r in rows],
                "sha256": [digest_of[r] for r in rows],  # what other_size checks before it decodes a file again
            }
        for path in flat.values():
            os.remove(path)
        write_json(tmp / "manifest.json", manifest)
    return manifest


def report(manifest: dict) -> dict:
    """What prepare used and left out, with every skipped file and its reason: metrics/data_report.json."""
    out = {**manifest["counts"], **{f"n_{split}": info["count"] for split, info in manifest["splits"].items()},
           "skipped_files": manifest["skipped"], "duplicate_files": manifest["duplicates"]}
    if "conflicts" in manifest:  # the same bytes under two classes; absent when none
        out["conflict_files"] = manifest["conflicts"]
    if "boxes" in manifest:  # manifests written before boxes existed have none
        boxes = manifest["boxes"]
        out["boxes"] = {"source": boxes["source"], "matched": boxes["matched"], **boxes["per_split"],
                        "unused": boxes["unused"]}
    return out


def train_subset(x: np.ndarray, y: np.ndarray, brightness: np.ndarray, fraction: float, seed: int):
    """A stratified fraction of the training split (seed 004's small-data run); val and test stay as they are."""
    if fraction == 1:
        return x, y, brightness
    from sklearn.model_selection import train_test_split  # late, as in split_indices

    try:
        keep, _ = train_test_split(np.arange(len(y)), train_size=fraction, stratify=y, random_state=seed)
    except ValueError as error:
        raise CatdogError(f"data.train_fraction={fraction} leaves too few training images ({error})") from None
    keep = np.sort(keep)
    return x[keep], y[keep], brightness[keep]


def load_manifest(prepared: Path = PREPARED_DIR) -> dict:
    return json.loads((Path(prepared) / "manifest.json").read_text())


def load_split(split: str, size: int, prepared: Path = PREPARED_DIR) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, size, size), labels uint8 (N,), brightness float32 (N,)), read without pickle. A size
    that prepare did not cache (not in data.sizes) comes from other_size: decoded on first use, then kept."""
    prepared = Path(prepared)
    path = prepared / f"x{size}_{split}.npy"
    if not (prepared / "manifest.json").exists():
        raise CatdogError(f"{prepared} holds no prepared data: run `dvc repro prepare`")
    if not path.exists():
        path = other_size(size, prepared) / path.name
    return tuple(np.load(p, allow_pickle=False)
                 for p in (path, prepared / f"y_{split}.npy", prepared / f"brightness_{split}.npy"))


def other_size(size: int, prepared: Path = PREPARED_DIR, workers=None) -> Path:
    """The folder holding x{size}_{split}.npy for a size prepare did not cache, decoded from the images in
    data.images on first use, byte for byte what prepare would have written with the size in data.sizes (load_rgb's
    pixels of one size do not depend on the others). Sizes that only some models use (224 px: the pretrained ones)
    thus cost nothing until such a model trains, and DVC never hashes nor stores them: they live in the
    repository's .cache/prepared, keyed by the prepared manifest (files, split, their sha256) and the decoding code
    (decode.decoder_key), shared by queued experiments, and are only ever written whole. A file whose bytes differ
    from what prepare read is an error."""
    prepared = Path(prepared)
    text = (prepared / "manifest.json").read_bytes()
    manifest = json.loads(text)
    if "images" not in manifest or any("sha256" not in info for info in manifest["splits"].values()):
        raise CatdogError(f"{prepared} has no {size} px images and was written before other sizes could be decoded "
                          f"on demand: run `dvc repro prepare` (or add {size} to data.sizes)")
    key = hashlib.sha256(text + f"\nsize {size}\ndecoder {decoder_key()}".encode()).hexdigest()[:24]
    folder = repo_root() / OTHER_SIZES / f"{size}-{key}"
    if folder.is_dir():
        return folder
    root = Path(manifest["images"])
    names = [f for split in SPLITS for f in manifest["splits"][split]["files"]]
    digests = [d for split in SPLITS for d in manifest["splits"][split]["sha256"]]
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        flat = {size: tmp / f"all{size}.u8"}
        flat[size].touch()
        with decoding([root / n for n in names], [size], flat, workers or os.cpu_count()) as decoded:
            for name, expected, (digest, result) in zip(names, digests, decoded):
                if digest != expected:
                    why = result if digest is None else "its bytes differ"
                    raise CatdogError(f"{root / name} is not the file prepare read ({why}): run `dvc repro prepare` "
                                      f"to prepare data.images={root} again, or add {size} to data.sizes")
        start = 0
        for split in SPLITS:
            count = manifest["splits"][split]["count"]
            write_npy_rows(flat[size], np.arange(start, start + count), (3, size, size), tmp / f"x{size}_{split}.npy")
            start += count
        os.remove(flat[size])
        try:
            os.rename(tmp, folder)
        except OSError:  # another process (a queued experiment) wrote the same bytes first: keep theirs
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_boxes(split: str, size: int, prepared: Path = PREPARED_DIR) -> np.ndarray | None:
    """The animal's box in each image of the split, in pixels of the cached size x size images: float32 (N, 4)
    x0, y0, x1, y1 (x1 and y1 exclusive), rows in load_split's order, NaN rows for images without a box. None when
    the prepared data has no boxes at all (no data.boxes CSV, or no row of it matched these images)."""
    path = Path(prepared) / f"boxes_{split}.npy"
    if not path.exists():
        return None
    return np.load(path, allow_pickle=False) * np.float32(size)
