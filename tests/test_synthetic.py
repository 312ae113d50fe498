"""The embedded dataset: deterministic, balanced, and photo-like in size and shape."""

import hashlib

import numpy as np
from PIL import Image

from catdog.data.images import discover
from catdog.data.prepared import read_boxes
from catdog.data.synthetic import _animal, generate, write_boxes


def digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.jpg"))}


def test_same_seed_gives_the_same_bytes_whatever_the_workers(tmp_path):
    generate(tmp_path / "one", n_images=12, seed=3, workers=1)
    generate(tmp_path / "two", n_images=12, seed=3, workers=2)
    generate(tmp_path / "other", n_images=12, seed=4, workers=1)
    assert digests(tmp_path / "one") == digests(tmp_path / "two")
    assert set(digests(tmp_path / "one").values()).isdisjoint(digests(tmp_path / "other").values())


def test_half_cats_half_dogs_in_varied_sizes(tmp_path):
    generate(tmp_path, n_images=21, seed=0, workers=1)
    files, labels, classes = discover(tmp_path)
    assert classes == ["cat", "dog"] and len(files) == 21 and sum(labels) in (10, 11)
    sizes = {Image.open(f).size for f in files}
    assert len(sizes) > 15  # varied like photos from the web, not one fixed size
    assert all(Image.open(f).format == "JPEG" for f in files)


def test_generate_returns_the_animal_boxes_and_write_boxes_writes_them(tmp_path):
    rows = generate(tmp_path / "one", n_images=8, seed=5, workers=1)
    assert rows == generate(tmp_path / "two", n_images=8, seed=5, workers=2)  # deterministic, in file order
    assert digests(tmp_path / "one") == digests(tmp_path / "two")
    assert [r[0] for r in rows] == sorted(digests(tmp_path / "one"))
    write_boxes(tmp_path / "boxes.csv", rows)
    read = read_boxes(tmp_path / "boxes.csv")  # what prepare reads, so the two agree on the format
    assert list(read) == [r[0] for r in rows]
    for name, sha256, width, height, x0, y0, x1, y1 in rows:
        path = tmp_path / "one" / name
        assert sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert Image.open(path).size == (width, height)
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert (x1 - x0) * (y1 - y0) >= 0.02 * width * height  # an animal, not a speck
        assert read[name]["box"] == (x0, y0, x1, y1) and read[name]["size"] == (width, height)


def test_the_box_is_exactly_what_is_drawn_as_the_animal():
    # Drawn twice, on black and on white: the pixels that come out the same are the ones something covered, the
    # animal or the occluder (never in the box). Its box must lie inside what is covered, and equal it wherever
    # the occluder is absent or falls inside the animal's box.
    equal = 0
    for i in range(10):
        canvases, boxes = [], []
        for background in ("black", "white"):
            img = Image.new("RGB", (360, 280), background)
            boxes.append(_animal(img, np.random.default_rng([7, i % 2, i]), i % 2, *img.size))
            canvases.append(np.asarray(img))
        assert boxes[0] == boxes[1]
        covered = Image.fromarray(np.uint8((canvases[0] == canvases[1]).all(2)) * 255).getbbox()
        x0, y0, x1, y1 = boxes[0]
        assert covered[0] <= x0 < x1 <= covered[2] and covered[1] <= y0 < y1 <= covered[3]
        equal += boxes[0] == covered
    assert equal >= 5  # 7 of these 10
