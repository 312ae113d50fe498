"""prepare: discovery in both folder layouts, a deterministic stratified split, and the cached arrays."""

import numpy as np
import pytest
from PIL import Image

from catdog import CatdogError
from catdog.dataset import load_manifest, load_split, prepare, split_indices
from catdog.images import discover, load_rgb
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
    with pytest.raises(CatdogError, match="must each be in"):
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
