"""prepare: discovery in both folder layouts, a deterministic stratified split, the cached arrays and the boxes."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from catdog import CatdogError
from catdog.data import prepared
from catdog.data.decode import load_rgb
from catdog.data.images import discover
from catdog.data.prepared import load_boxes, load_manifest, load_split, prepare, report, split_indices
from conftest import write_image


def test_split_is_deterministic_stratified_and_disjoint():
    labels = np.array([0] * 120 + [1] * 80)
    first = split_indices(labels, 0.1, 0.1, seed=7)
    assert all(np.array_equal(first[s], split_indices(labels, 0.1, 0.1, seed=7)[s]) for s in first)
    assert not np.array_equal(first["test"], split_indices(labels, 0.1, 0.1, seed=8)["test"])
    assert sorted(np.concatenate(list(first.values())).tolist()) == list(range(200))
    assert [len(first[s]) for s in ("train", "val", "test")] == [160, 20, 20]
    for split in first.values():  # each split keeps the 60/40 class ratio
        assert abs(labels[split].mean() - 0.4) < 0.02


@pytest.mark.parametrize("val, test", [(0.0, 0.1), (0.5, 0.5), (0.1, 1.2)])
def test_impossible_fractions_are_refused(val, test):
    with pytest.raises(CatdogError, match=r"^data\.(val|test)_fraction=.* must (be a number|each be) in \(0, 1\)"):
        split_indices(np.array([0, 1] * 50), val, test, seed=0)


def test_too_few_images_for_the_split_is_a_clear_error():
    with pytest.raises(CatdogError, match="too few"):
        split_indices(np.array([0, 1, 0, 1]), 0.1, 0.1, seed=0)


def test_prepare_an_image_folder_layout(image_folder, tmp_path):
    files, labels, classes = discover(image_folder)
    assert classes == ["cat", "dog"] and len(files) == 20 and sum(labels) == 10
    manifest = prepare(files, labels, classes, image_folder, sizes=[16, 32], val_fraction=0.2, test_fraction=0.2,
                       seed=0, out_dir=tmp_path / "prepared", workers=2)
    counts = {s: manifest["splits"][s]["count"] for s in ("train", "val", "test")}
    assert counts == {"train": 12, "val": 4, "test": 4}
    for split, n in counts.items():
        for size in (16, 32):
            x, y, brightness = load_split(split, size, tmp_path / "prepared")
            assert x.shape == (n, 3, size, size) and x.dtype == np.uint8 and y.dtype == np.uint8
            assert brightness.shape == (n,) and ((brightness > 0.5) == (y == 1)).all()  # dark cats, bright dogs
        # the labels follow the folders: cats are dark, dogs bright
        files = manifest["splits"][split]["files"]
        assert [f.split("/")[0] for f in files] == [classes[i] for i in y]
        assert (x.reshape(n, -1).mean(1) > 128).tolist() == (y == 1).tolist()
    assert load_manifest(tmp_path / "prepared") == manifest


def test_a_size_prepare_did_not_cache_is_decoded_on_first_use_as_prepare_would_have(image_folder, tmp_path,
                                                                                    monkeypatch):
    files, labels, classes = discover(image_folder)
    common = dict(val_fraction=0.2, test_fraction=0.2, seed=0, workers=2)
    prepare(files, labels, classes, image_folder, sizes=[16], out_dir=tmp_path / "one", **common)
    prepare(files, labels, classes, image_folder, sizes=[16, 24], out_dir=tmp_path / "both", **common)
    assert not (tmp_path / "one" / "x24_train.npy").exists()
    for split in ("train", "val", "test"):
        for got, expected in zip(load_split(split, 24, tmp_path / "one"), load_split(split, 24, tmp_path / "both")):
            assert got.dtype == expected.dtype and np.array_equal(got, expected)
    kept = list((tmp_path / "other-sizes").glob("24-*/x24_*.npy"))
    assert len(kept) == 3 and not list((tmp_path / "other-sizes").glob(".*"))  # written whole, no leftovers

    # Read again from the cache, not decoded: even with the images gone.
    moved = tmp_path / "moved"
    image_folder.rename(moved)
    assert np.array_equal(load_split("test", 24, tmp_path / "one")[0], load_split("test", 24, tmp_path / "both")[0])
    moved.rename(image_folder)

    # Decoding code (or Pillow) that changed makes the cached pixels stale: they are decoded again, beside the old.
    with monkeypatch.context() as patch:
        patch.setattr(prepared, "decoder_key", lambda: "another decoder")
        assert np.array_equal(load_split("test", 24, tmp_path / "one")[0],
                              load_split("test", 24, tmp_path / "both")[0])
    assert len(list((tmp_path / "other-sizes").glob("24-*"))) == 2

    # Another size from a folder whose image changed since prepare: one line, nothing half-written.
    changed = image_folder / load_manifest(tmp_path / "one")["splits"]["val"]["files"][0]
    Image.open(changed).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(changed, format="PNG" if changed.suffix ==
                                                                          ".png" else "JPEG")
    with pytest.raises(CatdogError, match=rf"{changed} is not the file prepare read \(its bytes differ\): run "
                                          r"`dvc repro prepare`"):
        load_split("train", 32, tmp_path / "one")
    assert not list((tmp_path / "other-sizes").glob("32-*")) and not list((tmp_path / "other-sizes").glob(".*"))


def test_prepare_a_flat_kaggle_layout(tmp_path):
    root = tmp_path / "train"
    for i in range(8):
        write_image(root / f"cat.{i}.jpg", (50, 50, 50))
        write_image(root / f"Dog.{i}.jpeg", (210, 210, 210))
    (root / "readme.txt").write_text("not an image")
    files, labels, classes = discover(root)
    assert classes == ["cat", "dog"] and len(files) == 16
    manifest = prepare(files, labels, classes, root, sizes=[8], val_fraction=0.25, test_fraction=0.25, seed=1,
                       out_dir=tmp_path / "prepared", workers=1)
    assert sum(manifest["splits"][s]["count"] for s in manifest["splits"]) == 16
    assert manifest["splits"]["test"]["per_class"] == {"cat": 2, "dog": 2}


def test_an_unreadable_file_is_skipped_and_reported(image_folder, tmp_path):
    (image_folder / "cat" / "broken.jpg").write_bytes(b"")
    files, labels, classes = discover(image_folder)
    manifest = prepare(files, labels, classes, image_folder, sizes=[8], val_fraction=0.2, test_fraction=0.2,
                       seed=0, out_dir=tmp_path / "prepared", workers=1)
    assert [s["file"] for s in manifest["skipped"]] == ["cat/broken.jpg"]
    assert sum(manifest["splits"][s]["count"] for s in manifest["splits"]) == 20


def test_a_folder_with_one_class_is_refused(tmp_path):
    write_image(tmp_path / "cat" / "1.jpg", (0, 0, 0))
    with pytest.raises(CatdogError, match="needs exactly two"):
        discover(tmp_path)


def test_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(CatdogError, match="is not a folder"):
        discover(tmp_path / "nope")


@pytest.mark.parametrize("colour, luminance", [
    ((0, 0, 0), 0.0), ((255, 255, 255), 1.0), ((255, 0, 0), 0.299), ((0, 255, 0), 0.587), ((128, 128, 128), 128 / 255),
])
def test_brightness_is_the_mean_luminance_in_0_1(tmp_path, colour, luminance):
    path = tmp_path / "solid.png"
    Image.new("RGB", (37, 23), colour).save(path)
    arrays, brightness = load_rgb(path, [8])
    assert brightness == pytest.approx(luminance, abs=0.002)
    assert arrays[0].shape == (3, 8, 8) and (arrays[0] == np.array(colour).reshape(3, 1, 1)).all()


def test_brightness_averages_over_the_image(tmp_path):
    half = np.zeros((10, 20, 3), dtype=np.uint8)
    half[:, 10:] = 255
    Image.fromarray(half).save(tmp_path / "half.png")
    assert load_rgb(tmp_path / "half.png", [4])[1] == pytest.approx(0.5, abs=1e-6)


GREY, RED = (128, 128, 128), (220, 20, 20)


def red_box_image(path, size, box):
    """A grey canvas with a red rectangle over the pixels box = (x0, y0, x1, y1), x1 and y1 exclusive."""
    pixels = np.full((size[1], size[0], 3), GREY, dtype=np.uint8)
    x0, y0, x1, y1 = box
    pixels[y0:y1, x0:x1] = RED
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def boxes_csv(path, rows):
    path.write_text("file,sha256,width,height,x0,y0,x1,y1\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


@pytest.fixture
def boxed_folder(tmp_path):
    """Six cats and six dogs, each a non-square grey PNG with a red rectangle in its own place, and their CSV
    (sha256 given for half of them: it is optional)."""
    root, rows = tmp_path / "images", []
    for i in range(12):
        cls = ("cat", "dog")[i % 2]
        size = (50 + 5 * i, 70 - 2 * i) if i % 2 else (64 + 3 * i, 40 + i)
        box = (2 + i, 3 + i // 2, 2 + i + size[0] // 2, 3 + i // 2 + size[1] // 3 + i)
        red_box_image(root / cls / f"{i}.png", size, box)
        sha256 = hashlib.sha256((root / cls / f"{i}.png").read_bytes()).hexdigest() if i % 4 < 2 else ""
        rows.append((f"{cls}/{i}.png", sha256, *size, *box))
    return root, boxes_csv(tmp_path / "boxes.csv", rows)


def test_the_boxes_land_on_the_red_rectangle_at_every_cached_size(boxed_folder, tmp_path):
    root, csv_path = boxed_folder
    files, labels, classes = discover(root)
    manifest = prepare(files, labels, classes, root, sizes=[16, 32, 48], val_fraction=0.25, test_fraction=0.25,
                       seed=0, out_dir=tmp_path / "prepared", workers=2, boxes=csv_path)
    assert manifest["boxes"]["matched"] == 12 and manifest["boxes"]["per_split"] == {"train": 6, "val": 3, "test": 3}
    assert report(manifest)["boxes"]["matched"] == 12
    rows = {line.split(",")[0]: [int(v) for v in line.split(",")[2:]] for line in csv_path.read_text().split()[1:]}
    for split in ("train", "val", "test"):
        for size in (16, 32, 48):
            x, _, _ = load_split(split, size, tmp_path / "prepared")
            boxes = load_boxes(split, size, tmp_path / "prepared")
            assert boxes.shape == (len(x), 4) and boxes.dtype == np.float32
            for name, (x0, y0, x1, y1) in zip(manifest["splits"][split]["files"], boxes):
                w, h, *box = rows[name]  # squashed to size x size: x scales by size / w, y by size / h
                assert [x0, y0, x1, y1] == pytest.approx(np.multiply(box, [size / w, size / h] * 2), rel=1e-6)
            for image, (x0, y0, x1, y1) in zip(x, boxes):  # and so the box is where the red rectangle is
                red = (image[0].astype(int) - image[1]) > 100  # (size, size)
                grey = np.abs(image[0].astype(int) - image[1]) < 10
                lo, hi = np.arange(size), np.arange(size) + 1  # each pixel covers [lo, hi)
                inside_x, inside_y = (lo >= x0 + 1) & (hi <= x1 - 1), (lo >= y0 + 1) & (hi <= y1 - 1)
                outside_x, outside_y = (hi <= x0 - 1) | (lo >= x1 + 1), (hi <= y0 - 1) | (lo >= y1 + 1)
                assert inside_x.any() and inside_y.any()
                assert red[np.ix_(inside_y, inside_x)].all()  # rows are y, columns x
                assert grey[outside_y, :].all() and grey[:, outside_x].all()


def test_without_a_boxes_file_nothing_changes_and_there_are_no_boxes(image_folder, tmp_path):
    files, labels, classes = discover(image_folder)
    for boxes in (None, tmp_path / "missing.csv"):
        out = tmp_path / f"prepared_{boxes is None}"
        manifest = prepare(files, labels, classes, image_folder, sizes=[8], val_fraction=0.2, test_fraction=0.2,
                           seed=0, out_dir=out, workers=1, boxes=boxes)
        assert manifest["boxes"]["matched"] == 0 and manifest["boxes"]["rows"] == 0
        assert not list(out.glob("boxes_*")) and load_boxes("test", 8, out) is None
        assert sum(manifest["splits"][s]["count"] for s in manifest["splits"]) == 20


def test_rows_that_do_not_fit_their_file_are_counted_and_leave_it_without_a_box(boxed_folder, tmp_path):
    root, csv_path = boxed_folder
    rows = [line.split(",") for line in csv_path.read_text().splitlines()[1:]]
    rows[0][1] = "0" * 64                     # cat/0.png: another version of the file
    rows[1][2] = str(int(rows[1][2]) + 1)     # dog/1.png: another size
    rows[2] = rows[2][:2] + ["1000", "1000", "1", "1", "9", "9"]  # cat/2.png: another size, box inside it
    rows.append(["cat/ghost.png", "", "10", "10", "1", "1", "5", "5"])  # not in the folder
    (root / "cat" / "broken.png").write_bytes(b"")                     # unreadable, so in no split
    rows.append(["cat/broken.png", "", "10", "10", "1", "1", "5", "5"])
    # EXIF orientation 6 turns the stored 40x20 into a displayed 20x40: the CSV gives the size as displayed
    exif = Image.Exif()
    exif[0x0112] = 6
    for name, colour, viewed in (("dog/turned.jpg", (40, 90, 200), (20, 40)),
                                 ("dog/stale.jpg", (90, 40, 20), (40, 20))):
        Image.new("RGB", (40, 20), colour).save(root / name, exif=exif)
        rows.append([name, "", *map(str, viewed), "2", "3", "12", "18"])
    boxes_csv(csv_path, rows)
    files, labels, classes = discover(root)
    manifest = prepare(files, labels, classes, root, sizes=[16], val_fraction=0.25, test_fraction=0.25, seed=0,
                       out_dir=tmp_path / "prepared", workers=1, boxes=csv_path)
    boxes = manifest["boxes"]
    assert boxes["unused"] == {"not_in_folder": 1, "left_out": 1, "sha256_differs": 1, "size_differs": 3}
    assert boxes["unused_examples"]["size_differs"] == ["cat/2.png", "dog/1.png", "dog/stale.jpg"]  # file order
    assert boxes["matched"] == 12 - 3 + 1 and boxes["rows"] == len(rows)
    assert report(manifest)["boxes"]["unused"] == boxes["unused"]
    without = {"cat/0.png", "dog/1.png", "cat/2.png", "dog/stale.jpg"}
    for split, info in manifest["splits"].items():
        found = load_boxes(split, 16, tmp_path / "prepared")
        assert [f in without for f in info["files"]] == np.isnan(found).all(1).tolist()
        if "dog/turned.jpg" in info["files"]:
            turned = found[info["files"].index("dog/turned.jpg")]
            assert turned == pytest.approx([2 / 20 * 16, 3 / 40 * 16, 12 / 20 * 16, 18 / 40 * 16])


HEADER = "file,sha256,width,height,x0,y0,x1,y1\n"


@pytest.mark.parametrize("text, message", [
    ("file,width,height,x0,y0,x1\ncat/0.png,64,40,1,1,5\n", "line 1: no column y1; the header must be"),
    (HEADER + "cat/0.png,,64,40,one,1,5,5\n", "line 2: a value is not a number .*x0='one'"),
    (HEADER + "cat/0.png,,64,40,1,1,5,5\ndog/1.png,,55,68,9,1,9,5\n", "line 3: box x0=9, y0=1, x1=9, y1=5 is empty"),
    (HEADER + "cat/0.png,,64,40,1,1,65,5\n", "line 2: box .* outside the 64x40 image"),
    (HEADER + "cat/0.png,,64,40,-1,1,6,5\n", "line 2: box .* outside"),
    (HEADER + "cat/0.png,,64.5,40,1,1,6,5\n", "line 2: width=64.5, height=40 must be the image's size in whole"),
    (HEADER + "cat/0.png,,64,40,1,1,6,5\ncat/0.png,,64,40,1,1,6,5\n", "line 3: cat/0.png has a row already .line 2"),
    (HEADER + "cat/0.png,,64,40,1,1,6\n", "line 2: a value is not a number .*y1=None"),
])
def test_a_malformed_boxes_file_is_one_line_naming_the_line(boxed_folder, tmp_path, text, message):
    root, csv_path = boxed_folder
    csv_path.write_text(text)
    files, labels, classes = discover(root)
    with pytest.raises(CatdogError, match=message) as error:
        prepare(files, labels, classes, root, sizes=[8], val_fraction=0.25, test_fraction=0.25, seed=0,
                out_dir=tmp_path / "prepared", workers=1, boxes=csv_path)
    assert "\n" not in str(error.value) and str(error.value).startswith(str(csv_path))
    assert not (tmp_path / "prepared").exists()  # found before any decoding
