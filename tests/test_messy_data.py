"""prepare on a folder as messy as the Kaggle / PetImages sets: it never crashes, converts what it can, and
reports every file it leaves out."""

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catdog.data.decode import load_rgb, skip_reason
from catdog.data.images import discover
from catdog.data.prepared import prepare
from conftest import ROOT, write_image


def jpeg_bytes(colour=(200, 120, 40), size=(48, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def messy(tmp_path):
    root = tmp_path / "PetImages"
    for i in range(12):  # enough good images of each class for a split
        write_image(root / "Cat" / f"{i}.jpg", (70, 70, 70))
        write_image(root / "Dog" / f"{i}.jpg", (190, 190, 190))
    (root / "Cat" / "666.jpg").write_bytes(b"")                                  # zero bytes
    (root / "Dog" / "11702.jpg").write_bytes(jpeg_bytes()[:300])                 # truncated JPEG
    Image.new("RGB", (30, 30), "red").save(root / "Cat" / "really_png.jpg", format="PNG")
    Image.new("L", (30, 30), 90).save(root / "Cat" / "grey.JPG")                 # greyscale, upper-case
    Image.new("CMYK", (30, 30), (0, 255, 255, 0)).save(root / "Dog" / "cmyk.Jpeg")
    palette = Image.new("P", (30, 30), 1)
    palette.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    palette.save(root / "Dog" / "anim.gif", transparency=0)
    rgba = Image.new("RGBA", (30, 30), (0, 0, 255, 0))                           # fully transparent
    rgba.save(root / "Dog" / "transparent.png")
    (root / "Dog" / "Thumbs.db").write_bytes(b"\x00" * 64)                       # stray non-image files
    (root / "Cat" / "notes.txt").write_text("not an image")
    (root / "Cat" / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "Cat" / ".hidden.jpg").write_bytes(jpeg_bytes())
    (root / "Dog" / "copy_of_0.jpg").write_bytes((root / "Dog" / "0.jpg").read_bytes())  # byte-identical
    # 100 megapixels in a tiny file: past Pillow's limit, where Pillow itself only warns
    Image.new("1", (10000, 10000)).save(root / "Dog" / "bomb.png")
    return root


def test_prepare_skips_reports_and_converts_without_crashing(messy, tmp_path):
    files, labels, classes = discover(messy)
    names = {f.name for f in files}
    assert classes == ["cat", "dog"]  # PetImages' Cat/ and Dog/, named in lower case
    assert {"Thumbs.db", "notes.txt", ".DS_Store", ".hidden.jpg"}.isdisjoint(names)
    manifest = prepare(files, labels, classes, messy, sizes=[16], val_fraction=0.2, test_fraction=0.2, seed=0,
                       out_dir=tmp_path / "prepared", workers=2)
    skipped = {entry["file"]: entry["reason"] for entry in manifest["skipped"]}
    assert set(skipped) == {"Cat/666.jpg", "Dog/11702.jpg", "Dog/bomb.png"}
    assert "DecompressionBomb" in skipped["Dog/bomb.png"] and "truncated" in skipped["Dog/11702.jpg"].lower()
    assert manifest["duplicates"] == [{"file": "Dog/copy_of_0.jpg", "duplicate_of": "Dog/0.jpg"}]
    used = [f for split in manifest["splits"].values() for f in split["files"]]
    assert {"Cat/really_png.jpg", "Cat/grey.JPG", "Dog/cmyk.Jpeg", "Dog/anim.gif", "Dog/transparent.png"} <= set(used)
    assert manifest["counts"] == {"found": len(files), "used": len(used), "skipped": 3, "duplicates": 1}


@pytest.mark.parametrize("make, expected", [
    (lambda p: Image.new("L", (10, 10), 100).save(p, format="JPEG"), (100, 100, 100)),
    (lambda p: Image.new("CMYK", (10, 10), (0, 0, 0, 0)).save(p, format="JPEG"), (255, 255, 255)),
    (lambda p: Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(p, format="PNG"), (255, 255, 255)),  # white, not black
    (lambda p: Image.fromarray(np.full((10, 10), 65535, dtype=np.uint16)).save(p, format="PNG"), (255, 255, 255)),
])
def test_every_mode_becomes_rgb(tmp_path, make, expected):
    path = tmp_path / "image"
    make(path)
    arrays, _ = load_rgb(path, [4])
    assert arrays[0].shape == (3, 4, 4)
    assert np.abs(arrays[0].reshape(3, -1).mean(1) - expected).max() <= 2


def test_exif_orientation_is_applied(tmp_path):
    tall = np.zeros((40, 20, 3), dtype=np.uint8)
    tall[:20] = 255  # top half white as stored; rotated 90 degrees by EXIF it becomes a side half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(tall).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    array = load_rgb(tmp_path / "rotated.jpg", [8])[0][0][0]  # red channel, 8x8
    assert array[:, 4:].mean() > 200 and array[:, :4].mean() < 50  # white half on the right, as displayed


def run_prepare(tmp_path, images, **data):
    params = {"seed": 0, "data": {"images": str(images), "sizes": [8], "val_fraction": 0.2, "test_fraction": 0.2,
                                  **data}}
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    return subprocess.run([sys.executable, str(ROOT / "src/stages/prepare.py")], cwd=tmp_path, capture_output=True,
                          text=True)


@pytest.mark.parametrize("setup, data, message", [
    (lambda root: None, {}, "is not a folder"),
    (lambda root: root.mkdir(), {}, "0 class"),
    (lambda root: write_image(root / "cat" / "1.jpg", (0, 0, 0)), {}, "needs exactly two"),
    (lambda root: [(root / c).mkdir(parents=True) for c in ("cat", "dog")] and (root / "cat" / "1.jpg").write_bytes(b"")
     or write_image(root / "dog" / "1.jpg", (9, 9, 9)), {}, "class 'cat' .* has no usable image"),
    (lambda root: [write_image(root / c / f"{c}{i}.jpg", (i, i, i)) for c in ("cat", "dog") for i in range(3)], {},
     "too few"),
    (lambda root: None, {"val_fraction": 0.7, "test_fraction": 0.5}, "must each be in .0, 1. and sum to less than 1"),
    (lambda root: None, {"sizes": [2]}, "data.sizes=.2. must be a list of square sizes"),
])
def test_unusable_data_is_one_line_and_a_non_zero_exit(tmp_path, setup, data, message):
    images = tmp_path / "images"
    setup(images)
    result = run_prepare(tmp_path, images, **data)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("catdog: error: ") and __import__("re").search(message, last), result.stderr
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())  # nothing half-written


def test_your_own_folder_with_the_synthetic_boxes_is_one_line_and_no_boxes(tmp_path):
    images = tmp_path / "pets"
    for c in ("cat", "dog"):
        for i in range(5):
            write_image(images / c / f"cat.{i:05d}.jpg", (60, 60, 60) if c == "cat" else (200, 200, 200))
    (tmp_path / "data").mkdir()
    # the default data.boxes, as generate writes it: same names as these files, other bytes, and one not here
    (tmp_path / "data" / "synthetic_boxes.csv").write_text(
        "file,sha256,width,height,x0,y0,x1,y1\n" + f"cat/cat.00000.jpg,{'ab' * 32},40,30,1,2,20,25\n"
        "dog/dog.00000.jpg,,40,30,1,2,20,25\n")
    result = run_prepare(tmp_path, images, boxes="data/synthetic_boxes.csv")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "boxes" in line]
    assert lines == [("no animal boxes for these images (data.boxes=data/synthetic_boxes.csv: 2 rows, none usable "
                      "for these images; rows unused: 1 not in folder, 1 sha256 differs): pointing_game and "
                      "attribution_in_box will be absent")]
    assert not list((tmp_path / "data" / "prepared").glob("boxes_*"))
    report = json.loads((tmp_path / "metrics" / "data_report.json").read_text())
    assert report["boxes"]["matched"] == 0 and report["boxes"]["unused"]["sha256_differs"] == 1


def test_prepare_on_a_messy_folder_gives_the_same_bytes_on_every_run_and_in_every_checkout(tmp_path):
    """Skip reasons hold no memory address (Pillow names the BytesIO it could not read) nor path, so the same
    folder gives the same data/prepared, DVC hash and all, and the same data report; here in two checkouts."""
    images = tmp_path / "first" / "PetImages"
    for i in range(6):
        write_image(images / "Cat" / f"{i}.jpg", (70, 70, 70))
        write_image(images / "Dog" / f"{i}.jpg", (190, 190, 190))
    (images / "Cat" / "666.jpg").write_bytes(b"")                                   # zero bytes
    (images / "Dog" / "11702.jpg").write_bytes(jpeg_bytes()[:300])                  # truncated
    (images / "Dog" / "not_an_image.png").write_text("<html>a web page saved as a picture</html>")
    (images / "Cat" / "noise.jpg").write_bytes(bytes(range(256)) * 4)               # no format at all
    shutil.copytree(tmp_path / "first", tmp_path / "second")
    outputs = []
    for checkout in ("first", "second"):
        result = run_prepare(tmp_path / checkout, "PetImages")  # relative, as in params.yaml
        assert result.returncode == 0, result.stderr
        folder = tmp_path / checkout
        outputs.append({path.relative_to(folder).as_posix(): path.read_bytes()
                        for path in sorted([*(folder / "data" / "prepared").iterdir(),
                                            folder / "metrics" / "data_report.json"])})
    assert outputs[0] == outputs[1]
    data_report = json.loads(outputs[0]["metrics/data_report.json"])
    reasons = {entry["file"]: entry["reason"] for entry in data_report["skipped_files"]}
    assert reasons == {"Cat/666.jpg": "UnidentifiedImageError: cannot identify image file",
                       "Cat/noise.jpg": "UnidentifiedImageError: cannot identify image file",
                       "Dog/11702.jpg": reasons["Dog/11702.jpg"],
                       "Dog/not_an_image.png": "UnidentifiedImageError: cannot identify image file"}
    assert "truncated" in reasons["Dog/11702.jpg"].lower() and not re.search("0x|/", reasons["Dog/11702.jpg"])


def test_a_skip_reason_names_the_file_not_its_path():
    error = PermissionError(13, "Permission denied")
    error.filename = "/home/someone/pets/cat/1.jpg"
    assert skip_reason(error, Path("/home/someone/pets/cat/1.jpg")) == "PermissionError: [Errno 13] Permission " \
                                                                       "denied: '1.jpg'"


def grey_twins(tmp_path) -> tuple:
    """An 8-bit greyscale ramp with dark tones, and the same picture as a 16-bit PNG and as a float TIFF."""
    ramp = np.tile(np.concatenate([np.arange(0, 256), np.full(64, 4)]).astype(np.uint8), (24, 1))
    Image.fromarray(ramp).save(tmp_path / "8-bit.png")
    Image.fromarray(ramp.astype(np.uint16) * 257).save(tmp_path / "16-bit.png")
    Image.fromarray(ramp.astype(np.float32) / 255).save(tmp_path / "float.tif")
    assert [Image.open(tmp_path / name).mode for name in ("8-bit.png", "16-bit.png", "float.tif")] == ["L", "I;16", "F"]
    return tmp_path / "8-bit.png", tmp_path / "16-bit.png", tmp_path / "float.tif"


def test_16_bit_and_float_images_are_scaled_by_their_mode_not_by_their_pixels(tmp_path):
    eight, sixteen, floating = grey_twins(tmp_path)
    (reference,), brightness = load_rgb(eight, [32])
    for twin in (sixteen, floating):
        (array,), twin_brightness = load_rgb(twin, [32])
        assert np.abs(array.astype(int) - reference).max() <= 1, twin  # within one grey level
        assert twin_brightness == pytest.approx(brightness, abs=1 / 255)
    # A dark 16-bit photo stays dark (it was stretched to white by its own maximum), a float one in [0, 1] bright
    # (it was divided by 255), and float values outside [0, 1] are clipped.
    Image.fromarray(np.full((8, 8), 1000, dtype=np.uint16)).save(tmp_path / "dark.png")  # 1.5 % grey
    Image.fromarray(np.full((8, 8), 0.8, dtype=np.float32)).save(tmp_path / "light.tif")
    Image.fromarray(np.array([[-0.5, 1.5]] * 2, dtype=np.float32)).save(tmp_path / "out_of_range.tif")
    assert (load_rgb(tmp_path / "dark.png", [4])[0][0] == 4).all()          # 1000 / 65535 * 255 = 3.9
    assert (load_rgb(tmp_path / "light.tif", [4])[0][0] == 204).all()       # 0.8 * 255
    clipped = load_rgb(tmp_path / "out_of_range.tif", [2])[0][0]
    assert clipped.min() == 0 and clipped.max() == 255
