"""The embedded dataset: deterministic, balanced, and photo-like in size and shape."""

import hashlib

from PIL import Image

from catdog.images import discover
from catdog.synthetic import generate


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
