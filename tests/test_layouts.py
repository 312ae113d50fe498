"""The folder layouts people download get the labels cat and dog, whatever the spelling of their folders; any other
ambiguous layout is refused in one line; data.positive_class picks the class index 1; a picture under both classes
is a label conflict, left out."""

import json
import re

import numpy as np
import pytest

from catdog import CatdogError
from catdog.config import check_data
from catdog.data.images import class_name, discover, is_split
from catdog.data.prepared import load_split, prepare, report
from conftest import ROOT, committed_params, write_image
from test_messy_data import run_prepare

CAT, DOG = (60, 60, 60), (200, 200, 200)  # dark cats, bright dogs: a label can be checked from the pixels


def make(root, layout: dict[str, tuple]) -> None:
    """layout: {folder relative to root: (colour, number of images)}, the images named after their folder and
    number (train-cats0.jpg), so that no two have the same bytes."""
    for folder, (colour, n) in layout.items():
        for i in range(n):
            write_image(root / folder / f"{folder.lower().replace('/', '-')}{i}.jpg", colour, size=(24, 20))


def assert_cats_and_dogs(files, labels, classes, root) -> None:
    """The classes are cat and dog, and every file's label is the one its (dark or bright) pixels say."""
    assert classes == ["cat", "dog"]
    from PIL import Image

    bright = [int(np.asarray(Image.open(f)).mean() > 128) for f in files]
    assert labels == bright, [(f.relative_to(root).as_posix(), y) for f, y in zip(files, labels)]


@pytest.mark.parametrize("name, layout", [
    ("ImageFolder", {"cat": (CAT, 4), "dog": (DOG, 4)}),
    ("Kaggle PetImages", {"Cat": (CAT, 4), "Dog": (DOG, 4)}),
    ("TensorFlow cats_and_dogs_filtered", {"train/cats": (CAT, 4), "train/dogs": (DOG, 4),
                                           "validation/cats": (CAT, 2), "validation/dogs": (DOG, 2)}),
    ("Kaggle Cat and Dog", {"training_set/training_set/cats": (CAT, 4), "training_set/training_set/dogs": (DOG, 4),
                            "test_set/test_set/cats": (CAT, 2), "test_set/test_set/dogs": (DOG, 2)}),
    ("splits of any spelling, one per class case", {"Train/Cat": (CAT, 3), "Train/DOGS": (DOG, 3),
                                                    "val/cats": (CAT, 1), "val/dog": (DOG, 1),
                                                    "Test-Set/cat": (CAT, 1), "Test-Set/Dogs": (DOG, 1)}),
])
def test_the_layouts_people_download_give_cat_and_dog(tmp_path, name, layout):
    root = tmp_path / "download"
    make(root, layout)
    (root / "vectorize.py").write_text("# what cats_and_dogs_filtered ships beside its splits\n")
    (root / "__MACOSX").mkdir()  # what a zip made on a Mac unpacks beside the data
    (root / "__MACOSX" / "._cat-0.jpg").write_bytes(b"\x00\x05\x16\x07")
    files, labels, classes = discover(root)
    assert len(files) == sum(n for _, n in layout.values())
    assert_cats_and_dogs(files, labels, classes, root)


def test_the_flat_kaggle_dogs_vs_cats_layout_gives_cat_and_dog(tmp_path):
    root = tmp_path / "train"
    for i in range(3):
        write_image(root / f"cat.{i}.jpg", CAT)
        write_image(root / f"Dog.{i}.jpg", DOG)
        write_image(root / f"dogs_{i}.jpg", DOG)  # plural, another separator
    assert_cats_and_dogs(*discover(root), root)
    # ... and the same files inside a split folder: Kaggle's train/ seen from the folder above it
    assert_cats_and_dogs(*discover(tmp_path), tmp_path)


def test_a_capitalised_folder_gives_the_labels_and_the_order_of_a_lower_case_one(tmp_path):
    for spelling in ("lower", "mixed"):
        make(tmp_path / spelling, {"cat": (CAT, 3), "dog" if spelling == "lower" else "Dog": (DOG, 3)})
    lower, mixed = discover(tmp_path / "lower"), discover(tmp_path / "mixed")
    assert lower[1:] == mixed[1:] == ([0, 0, 0, 1, 1, 1], ["cat", "dog"])
    assert [f.name for f in lower[0]] == [f.name for f in mixed[0]]  # the same order, so the same split


@pytest.mark.parametrize("label, name", [("Cat", "cat"), ("cats", "cat"), ("CATS", "cat"), ("Dogs", "dog"),
                                         ("puppies", "puppy"), ("boxes", "box"), ("bus", "bus"), ("grass", "grass"),
                                         ("horses", "horse"), (" dog ", "dog")])
def test_a_class_name_is_lower_case_and_singular(label, name):
    assert class_name(label) == name


@pytest.mark.parametrize("folder, split", [("train", True), ("Training_Set", True), ("validation", True),
                                           ("VAL", True), ("test-data", True), ("testing", True), ("test1", False),
                                           ("cats", False), ("trainer", False)])
def test_split_folders_are_known_by_their_common_spellings(folder, split):
    assert is_split(folder) == split


@pytest.mark.parametrize("layout, message", [
    # class folders that hold class folders: which level are the classes?
    ({"cats/cats": (CAT, 2), "dogs/dogs": (DOG, 2)},
     r"the class folder cats/ holds the folder cats/cats/, named like a class: .*point data.images at the folder "
     r"whose subfolders are the classes \(cats/ here\?\)"),
    # a folder above the data: one "class" PetImages holding Cat/ and Dog/
    ({"PetImages/Cat": (CAT, 2), "PetImages/Dog": (DOG, 2)},
     r"the class folder PetImages/ holds the folder PetImages/Dog/, named like a class"),
    # splits under names that are not splits' names would be read as two classes set1 and set2
    ({"set1/cats": (CAT, 2), "set1/dogs": (DOG, 2), "set2/cats": (CAT, 2), "set2/dogs": (DOG, 2)},
     r"the class folder set1/ holds the folder set1/dogs/, named like a class: .* or name its parent folders as "
     r"splits \(train, validation, test\)"),
    # splits beside a folder that is neither a split nor a class (Kaggle's unlabelled test1/)
    ({"train/cat": (CAT, 2), "train/dog": (DOG, 2), "test1": (CAT, 2)},
     r"holds split folders \(train/\) beside folders that are not splits \(test1/\): .*move or delete test1/"),
    # a split of unlabelled images
    ({"train/cat": (CAT, 2), "train/dog": (DOG, 2), "test": (CAT, 0)},
     r"the split folder test/ holds no labelled images"),
    # three classes, pooled
    ({"train/cat": (CAT, 2), "train/dog": (DOG, 2), "val/horse": (CAT, 2)},
     r"holds images of 3 class\(es\) \['cat', 'dog', 'horse'\] \(split folders train, val of one folder per class\); "
     r"a binary classifier needs exactly two"),
])
def test_an_ambiguous_layout_is_refused_in_one_line_naming_it_and_the_fix(tmp_path, layout, message):
    root = tmp_path / "download"
    make(root, layout)
    for folder in layout:
        (root / folder).mkdir(parents=True, exist_ok=True)
    if "test" in layout:  # images without labels, as in Kaggle's test set
        write_image(root / "test" / "1.jpg", CAT)
    with pytest.raises(CatdogError) as error:
        discover(root)
    assert "\n" not in str(error.value) and re.search(message, str(error.value)), str(error.value)


def test_a_class_folder_may_hold_folders_that_are_not_classes(tmp_path):
    make(tmp_path, {"cat/persian": (CAT, 2), "cat/siamese": (CAT, 2), "dog/2019": (DOG, 3),
                    "cat/.ipynb_checkpoints/dog": (DOG, 1)})  # hidden: neither read nor a class folder
    files, labels, classes = discover(tmp_path)
    assert len(files) == 7
    assert_cats_and_dogs(files, labels, classes, tmp_path)


@pytest.mark.parametrize("positive, classes", [("dog", ["cat", "dog"]), ("DOGS", ["cat", "dog"]),
                                               ("cat", ["dog", "cat"]), ("Cats", ["dog", "cat"])])
def test_the_positive_class_is_index_1_in_any_case_or_number(tmp_path, positive, classes):
    make(tmp_path, {"Cat": (CAT, 2), "dogs": (DOG, 3)})
    files, labels, found = discover(tmp_path, positive)
    assert found == classes
    assert [found[y] for y in labels] == ["cat", "cat", "dog", "dog", "dog"]


def test_a_positive_class_that_is_not_a_class_names_the_classes_found(tmp_path):
    make(tmp_path, {"hotdog": (DOG, 2), "nothotdog": (CAT, 2)})
    with pytest.raises(CatdogError, match=r"^data.positive_class='dog' is not a class of data.images=.*, whose classes "
                                          r"are hotdog, nothotdog \(one folder per class\); set "
                                          r"data.positive_class to the one"):
        discover(tmp_path)
    assert discover(tmp_path, "hotdog")[2] == ["nothotdog", "hotdog"]


@pytest.mark.parametrize("value", [None, 3, "", "cats/dogs", ["dog"]])
def test_the_check_stage_refuses_a_positive_class_of_the_wrong_form(value):
    params = committed_params()
    assert params["data"]["positive_class"] == "dog"
    check_data(params)
    params["data"]["positive_class"] = value
    with pytest.raises(CatdogError, match=r"^data.positive_class=.* must be a class name such as dog or cat"):
        check_data(params)


def test_dvc_knows_that_prepare_reads_the_positive_class():
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert "data.positive_class" in stages["prepare"]["params"] and "data" in stages["check"]["params"]


def test_the_positive_class_gives_the_labels_prepare_writes(tmp_path):
    """With data.positive_class=cat the prepared labels are 1 for the cats, and the manifest says so."""
    make(tmp_path / "images", {"cat": (CAT, 5), "Dog": (DOG, 5)})
    result = run_prepare(tmp_path, tmp_path / "images", positive_class="cat")
    assert result.returncode == 0, result.stderr
    assert "classes ['dog', 'cat'] (positive cat)" in result.stdout
    prepared = tmp_path / "data" / "prepared"
    assert json.loads((prepared / "manifest.json").read_text())["classes"] == ["dog", "cat"]
    for split in ("train", "val", "test"):
        x, y, _ = load_split(split, 8, prepared)
        assert ((x.reshape(len(x), -1).mean(1) < 128) == (y == 1)).all()  # the dark ones are the positives


def test_a_split_layout_is_pooled_and_split_again_by_prepare(tmp_path):
    make(tmp_path / "cats_and_dogs_filtered", {"train/cats": (CAT, 6), "train/dogs": (DOG, 6),
                                               "validation/cats": (CAT, 4), "validation/dogs": (DOG, 4)})
    result = run_prepare(tmp_path, tmp_path / "cats_and_dogs_filtered")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "data" / "prepared" / "manifest.json").read_text())
    assert manifest["classes"] == ["cat", "dog"] and manifest["counts"]["used"] == 20
    files = [f for split in manifest["splits"].values() for f in split["files"]]
    assert {f.split("/")[0] for f in files} == {"train", "validation"}  # both splits pooled, then re-drawn
    assert all(manifest["splits"][s]["per_class"]["cat"] == manifest["splits"][s]["per_class"]["dog"]
               for s in manifest["splits"])


def test_the_same_picture_under_both_classes_is_a_conflict_left_out(tmp_path):
    root = tmp_path / "images"
    make(root, {"cat": (CAT, 6), "dog": (DOG, 6)})
    (root / "dog" / "actually_a_cat.jpg").write_bytes((root / "cat" / "cat2.jpg").read_bytes())
    (root / "cat" / "again.jpg").write_bytes((root / "cat" / "cat2.jpg").read_bytes())  # and twice under cat
    (root / "dog" / "copy.jpg").write_bytes((root / "dog" / "dog0.jpg").read_bytes())  # a plain duplicate
    files, labels, classes = discover(root)
    manifest = prepare(files, labels, classes, root, sizes=[8], val_fraction=0.2, test_fraction=0.2, seed=0,
                       out_dir=tmp_path / "prepared", workers=1)
    assert manifest["conflicts"] == [{"file": "cat/again.jpg", "same_bytes_as": "dog/actually_a_cat.jpg"},
                                     {"file": "cat/cat2.jpg", "same_bytes_as": "dog/actually_a_cat.jpg"},
                                     {"file": "dog/actually_a_cat.jpg", "same_bytes_as": "cat/again.jpg"}]
    assert manifest["duplicates"] == [{"file": "dog/dog0.jpg", "duplicate_of": "dog/copy.jpg"}]
    assert manifest["counts"] == {"found": 15, "used": 11, "skipped": 0, "duplicates": 1, "conflicts": 3}
    used = {f for split in manifest["splits"].values() for f in split["files"]}
    assert not used & {"cat/again.jpg", "cat/cat2.jpg", "dog/actually_a_cat.jpg"}
    data_report = report(manifest)
    assert data_report["conflicts"] == 3 and data_report["conflict_files"] == manifest["conflicts"]


def test_a_folder_without_conflicts_has_no_conflict_entries(image_folder, tmp_path):
    """So that the embedded dataset's manifest and data report stay the bytes they were before conflicts existed."""
    manifest = prepare(*discover(image_folder), image_folder, sizes=[8], val_fraction=0.2, test_fraction=0.2, seed=0,
                       out_dir=tmp_path / "prepared", workers=1)
    assert list(manifest) == ["classes", "sizes", "images", "counts", "skipped", "duplicates", "splits", "boxes"]
    assert list(manifest["counts"]) == ["found", "used", "skipped", "duplicates"]
    assert "conflict_files" not in report(manifest)
