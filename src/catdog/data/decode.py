"""Decoding image files into fixed-size RGB arrays, the same way for prepare, the sizes decoded on first use,
`catdog predict`, `catdog explain` and the served model; and the pool of processes prepare decodes with.

The decoding workers import this module alone (light: PIL and numpy), so that sklearn and torch never load in them.
decoder_key() names what the pixels depend on, this file's code and Pillow's version, so that a cache of decoded
images (data.prepared.other_size) goes stale when either changes.
"""

import contextlib
import functools
import hashlib
import io
import os
import re
import warnings
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageOps
from tqdm import tqdm

from catdog import error_text

DRAFT_SIDE = 512
# An object's repr in an error message, "<_io.BytesIO object at 0x7f3f17217a60>": a memory address that differs on
# every run, which would change the skip reasons written to data/prepared/manifest.json and so its hash.
OBJECT_REPR = re.compile(r" ?<[^<>]* at 0x[0-9a-fA-F]+>")
COPY_BYTES = 64 * 2 ** 20  # at most this much image data is read at a time when writing the splits


@functools.cache
def decoder_key() -> str:
    """sha256 of this module's source and Pillow's version: what decoded pixels depend on besides the file."""
    return hashlib.sha256(Path(__file__).read_bytes() + f"\nPillow {PIL.__version__}".encode()).hexdigest()


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
            if img.mode.startswith("I") or img.mode == "F":  # 16-bit, 32-bit and float greyscale
                img = _as_8_bit(img)
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


def _as_8_bit(img: Image.Image) -> Image.Image:
    """An integer or float greyscale image as 8-bit "L", scaled by what its mode can hold, never by its own
    pixels: 16-bit by 65535 / 255 (so a 16-bit copy of an 8-bit photo gives its pixels back), 32-bit integers by
    their TIFF bit depth (else 32 bits), float as [0, 1] (clipped, as float images store light)."""
    values = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        white = 1.0
    elif img.mode.startswith("I;16"):
        white = 2 ** 16 - 1
    else:
        bits = getattr(img, "tag_v2", {}).get(258, (32,))  # TIFF's BitsPerSample, one value per channel
        white = 2 ** int(bits[0] if isinstance(bits, tuple) else bits) - 1
    return Image.fromarray(np.uint8(np.rint(np.clip(values * (255 / white), 0, 255))))


def skip_reason(error: BaseException, path) -> str:
    """Why a file cannot be used, the same on every run and in every checkout: error_text without object reprs
    (Pillow names the BytesIO it read from) and with the file's name for its path."""
    return OBJECT_REPR.sub("", error_text(error)).replace(str(path), Path(path).name)


def viewed_size(source) -> tuple[int, int]:
    """(width, height) of an image file (a path or a file object) as displayed: load_rgb's size before its draft
    shrinks big JPEGs, turned by EXIF as ImageOps.exif_transpose turns it."""
    with Image.open(source) as img:  # lazy: reads the header, decodes nothing
        width, height = img.size
        if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # the orientations that rotate by 90 degrees
            width, height = height, width
    return width, height


_flat_files = {}  # a decoding worker's open all{size}.u8 files: {size: file descriptor}


def _open_flat(flat: dict) -> None:
    """Pool initializer: open the flat files {size: path} the worker writes its images into."""
    _flat_files.update({s: os.open(path, os.O_WRONLY) for s, path in flat.items()})


def decode_into_rows(item: tuple[int, Path], sizes: list[int]):
    """Decode file number i into row i of every flat file (in the worker: 486 MB of arrays for 2400 images would
    otherwise be pickled through a pipe to a main process that competes with the workers for the same cores).
    Returns (sha256 of the file, (brightness, (width, height) as displayed)) or (None, the reason it cannot be
    used); an unusable file's rows stay unwritten and are never read."""
    i, path = item
    try:
        data = Path(path).read_bytes()
        arrays, brightness = load_rgb(io.BytesIO(data), sizes)
        viewed = viewed_size(io.BytesIO(data))
    except Exception as error:  # any unreadable file is skipped and reported, never fatal
        return None, skip_reason(error, path)
    for s, array in dict(zip(sizes, arrays)).items():
        row = array.tobytes()  # C order, as (3, s, s)
        if os.pwrite(_flat_files[s], row, i * len(row)) != len(row):
            raise OSError(f"short write of image {i} at size {s}")
    return hashlib.sha256(data).hexdigest(), (brightness, viewed)


@contextlib.contextmanager
def decoding(files, sizes, flat: dict, workers: int):
    """An iterator of (sha256, result) of each file, in order, as decode_into_rows gives them, its rows written into the
    flat files by a pool of `workers` processes, started here."""
    # spawn, not fork: forking a process that runs other threads can hang the children. Native libraries start
    # threads that Python does not see (torch's, OpenBLAS's, jemalloc's): a forked pool hung in a queued experiment
    # whose prepare process held a jemalloc background thread, while spawn costs 0.2 s of start-up.
    with get_context("spawn").Pool(workers, initializer=_open_flat, initargs=(flat,)) as pool:
        yield tqdm(pool.imap(partial(decode_into_rows, sizes=sizes), enumerate(files), chunksize=16), total=len(files),
                   desc=f"decode at {'/'.join(map(str, sizes))} px", unit="img")


def write_npy_rows(source: Path, rows: np.ndarray, row_shape: tuple[int, ...], out: Path) -> None:
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
