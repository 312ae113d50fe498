"""The prepared dataset: a stratified split and uint8 arrays on disk, decoded once and read by every later stage.

Layout of data/prepared/:  x{size}_{split}.npy        uint8 (N, 3, size, size)
                           y_{split}.npy              uint8 (N,) class index
                           brightness_{split}.npy     float32 (N,) mean luminance in [0, 1]
                           manifest.json        classes, sizes, the files of each split, skipped files
"""

import contextlib
import hashlib
import importlib
import io
import json
import os
import threading
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from catdog import CatdogError
from catdog.images import load_rgb
from catdog.io import atomic_dir, write_json
from catdog.paths import PREPARED_DIR

SPLITS = ("train", "val", "test")
COPY_BYTES = 64 * 2 ** 20  # at most this much image data is read at a time when writing the splits


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise CatdogError(
            f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must each be in (0, 1) "
            "and sum to less than 1"
        )


def split_indices(labels, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Stratified train/val/test indices; the same labels and seed always give the same split."""
    # late: the decode pool's workers import this module (for _decode), and sklearn with scipy would add ~150 MB
    # of resident memory to each of them, one per core
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


def _decode(path: Path, sizes: list[int]):
    """(sha256 of the file, (arrays, brightness)) or (None, the reason it cannot be used)."""
    try:
        data = Path(path).read_bytes()
        return hashlib.sha256(data).hexdigest(), load_rgb(io.BytesIO(data), sizes)
    except Exception as error:  # any unreadable file is skipped and reported, never fatal
        return None, f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _write_rows(source: Path, rows: np.ndarray, row_shape: tuple[int, ...], out: Path) -> None:
    """Write rows `rows` of the flat uint8 file `source` (rows of shape row_shape, back to back) as the .npy file
    `out`, byte for byte what np.save of the (len(rows), *row_shape) array would write, reading each run of
    consecutive rows with one read of at most COPY_BYTES."""
    row_bytes = int(np.prod(row_shape))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                                                  "fortran_order": False, "shape": (len(rows), *row_shape)})
    per_read = max(1, COPY_BYTES // row_bytes)
    with open(source, "rb", buffering=0) as src, open(out, "wb") as dst:
        dst.write(header.getvalue())
        runs = np.split(np.asarray(rows, dtype=np.int64), np.flatnonzero(np.diff(rows) != 1) + 1)
        for run in runs:
            for start in range(0, len(run), per_read):
                count = min(per_read, len(run) - start)
                data = os.pread(src.fileno(), count * row_bytes, int(run[start]) * row_bytes)
                if len(data) != count * row_bytes:
                    raise OSError(f"{source} ends before row {int(run[start]) + count}")
                dst.write(data)


def prepare(files, labels, classes, root: Path, sizes, val_fraction, test_fraction, seed, out_dir=PREPARED_DIR,
            workers=None):
    """Decode every file once (all cores), drop unreadable files and byte-identical duplicates, split the rest,
    and write the arrays atomically. Returns the manifest, which includes the report of what was left out."""
    check_fractions(val_fraction, test_fraction)
    workers = workers or os.cpu_count()
    name = [str(Path(f).relative_to(root)) for f in files]
    with atomic_dir(out_dir) as tmp, contextlib.ExitStack() as files_open:
        # Every usable image's arrays are appended to one flat file per size with plain writes, and the split files
        # are then written from it with plain reads and writes: the data only passes through the page cache, which
        # the kernel writes back and reclaims as it needs. A writable memory map of these files would count every
        # page touched in the process's resident memory (about 5.3 GB for 25,000 images at 64, 128 and 224 px).
        every = {s: files_open.enter_context(open(tmp / f"all{s}.u8", "wb")) for s in dict.fromkeys(sizes)}
        brightness = np.zeros(len(files), dtype=np.float32)
        usable, skipped, duplicates, first_of = [], [], [], {}
        # The split needs sklearn, about a second to import: this process imports it while the workers decode.
        threading.Thread(target=importlib.import_module, args=("sklearn.model_selection",), daemon=True).start()
        # spawn, not fork: forking a process that already runs threads (torch's, in tests and notebooks) can hang
        with get_context("spawn").Pool(workers) as pool:
            decoded = pool.imap(partial(_decode, sizes=sizes), files, chunksize=16)
            for i, (digest, result) in enumerate(tqdm(decoded, total=len(files), desc="decode", unit="img")):
                if digest is None:
                    skipped.append({"file": name[i], "reason": result})
                elif digest in first_of:  # kept once, so the same picture can never sit in two splits
                    duplicates.append({"file": name[i], "duplicate_of": name[first_of[digest]]})
                else:
                    first_of[digest] = i
                    usable.append(i)  # its arrays are row len(usable) - 1 of every all{size}.u8
                    arrays, brightness[i] = result
                    for s, array in dict(zip(sizes, arrays)).items():
                        every[s].write(array.tobytes())  # C order, as (3, s, s)
        for f in every.values():
            f.close()
        usable = np.asarray(usable, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.uint8)
        for k, c in enumerate(classes):
            if not (labels[usable] == k).any():
                raise CatdogError(f"class {c!r} in {root} has no usable image (of all classes, {len(skipped)} "
                                  f"unreadable and {len(duplicates)} duplicate file(s) left out); add images of it")
        splits = split_indices(labels[usable], val_fraction, test_fraction, seed)
        manifest = {"classes": classes, "sizes": list(sizes),
                    "counts": {"found": len(files), "used": len(usable), "skipped": len(skipped),
                               "duplicates": len(duplicates)},
                    "skipped": skipped, "duplicates": duplicates, "splits": {}}
        for split, positions in splits.items():
            rows = usable[positions]
            for s in sizes:
                _write_rows(tmp / f"all{s}.u8", positions, (3, s, s), tmp / f"x{s}_{split}.npy")
            np.save(tmp / f"y_{split}.npy", labels[rows])
            np.save(tmp / f"brightness_{split}.npy", brightness[rows])
            manifest["splits"][split] = {
                "count": len(rows),
                "per_class": {c: int((labels[rows] == k).sum()) for k, c in enumerate(classes)},
                "files": [name[r] for r in rows],
            }
        for s in every:
            os.remove(tmp / f"all{s}.u8")
        write_json(tmp / "manifest.json", manifest)
    return manifest


def report(manifest: dict) -> dict:
    """What prepare used and left out, with every skipped file and its reason: metrics/data_report.json."""
    return {**manifest["counts"], **{f"n_{split}": info["count"] for split, info in manifest["splits"].items()},
            "skipped_files": manifest["skipped"], "duplicate_files": manifest["duplicates"]}


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
    """(images uint8 (N, 3, size, size), labels uint8 (N,), brightness float32 (N,)), read without pickle."""
    prepared = Path(prepared)
    path = prepared / f"x{size}_{split}.npy"
    if not path.exists():
        raise CatdogError(f"{path} is missing: run `dvc repro prepare` (and check data.sizes includes {size})")
    return tuple(np.load(p, allow_pickle=False)
                 for p in (path, prepared / f"y_{split}.npy", prepared / f"brightness_{split}.npy"))
