"""`catdog explain`: a heatmap PNG per photo, titled with the prediction, and per-file errors as in predict."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from catdog.commands import explain
from conftest import pipeline_env, write_image
from test_predict import build, photos, save_checkpoint  # noqa: F401 (photos: a fixture)

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def corner_model(tmp_path):
    """Logistic regression that says dog when the top-left quarter is bright: occlusion must point there."""
    cfg, model = build("logistic", input_size=32)
    with torch.no_grad():
        model[-1].weight.zero_()
        model[-1].weight.view(3, 32, 32)[:, :16, :16] = 1e-2
        model[-1].bias.zero_()
    save_checkpoint(tmp_path / "model.pt", "logistic", cfg, model)
    return tmp_path / "model.pt"


def test_each_photo_gets_its_heatmap_and_bad_files_do_not_stop_the_rest(tmp_path, photos, corner_model):  # noqa: F811
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes((photos / "b.jpg").read_bytes()[:200])
    twin = tmp_path / "twin" / "b.png"  # the same stem as photos/b.jpg: its own PNG, not an overwrite
    write_image(twin, (230, 230, 230), size=(64, 48))
    out = tmp_path / "explained"
    args = [photos, corrupt, tmp_path / "missing.jpg", twin]
    result = subprocess.run([sys.executable, "-m", "catdog", "explain", *map(str, args), "--model",
                             str(corner_model), "--out", str(out)],
                            env=pipeline_env(), capture_output=True, text=True, check=False)
    assert result.returncode == 1
    errors = result.stderr.splitlines()
    assert len(errors) == 2 and errors[0].startswith(f"catdog: error: {corrupt}: ")
    assert errors[1] == f"catdog: error: {tmp_path / 'missing.jpg'}: no such file or folder"
    written = sorted(p.name for p in out.iterdir())
    assert written == ["b-2.png", "b.png", "c.png", "cat.png", "dog.png"]
    for name in written:
        assert (out / name).read_bytes()[:8] == PNG
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines()}
    assert lines[str(photos / "b.jpg")][1] == "cat" and lines[str(twin)][1] == "dog"
    assert lines[str(twin)][-1] == str(out / "b-2.png")


def test_the_heatmap_points_where_the_model_looks(tmp_path, corner_model):
    photo = tmp_path / "bright.png"
    pixels = np.full((60, 90, 3), 40, dtype=np.uint8)
    pixels[:30, :45] = 250  # the model's quarter, bright: dog, for that reason
    Image.fromarray(pixels).save(photo)
    from catdog.device import pick_device
    from catdog.models.architectures import load_checkpoint

    checkpoint, model = load_checkpoint(corner_model)
    row = explain.explain_one(model, checkpoint, photo, pick_device("cpu"), tmp_path / "bright-explained.png")
    assert row["label"] == "dog" and row["probability"] > 0.9
    from catdog.analysis import attribution
    from catdog.data.decode import load_rgb

    square = torch.from_numpy(load_rgb(photo, [32])[0][0][None].copy())
    heat = attribution.attribute(model, checkpoint["config"], square, [1])[0]
    assert attribution.peak_in_box(heat[None], np.array([[0, 0, 16, 16]], dtype=np.float32))[0]
    shown = explain.shown_picture(load_rgb(photo, [explain.SHOWN_SIDE])[0][0], (90, 60))
    assert shown.shape == (60, 90, 3)  # the photo's own proportions, not the model's square


def test_explaining_a_folder_into_itself_twice_leaves_the_outputs_alone(tmp_path, corner_model):
    folder = tmp_path / "photos"
    write_image(folder / "a.jpg", (200, 200, 200), size=(40, 30))
    for _ in range(2):
        explain.main([str(folder), "--model", str(corner_model), "--out", str(folder / "explained")])
    assert sorted(p.name for p in (folder / "explained").iterdir()) == ["a.png"]
