"""`catdog predict`: checkpoints from the workspace or an MLflow run, files and folders, text and JSON, per-file
errors, and the same preprocessing as `prepare` (images.load_rgb) for every kind of model."""

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from catdog import CatdogError
from catdog.commands import predict
from catdog.data.decode import load_rgb
from catdog.models.architectures import build_model
from conftest import committed_params, pipeline_env, write_image

MODELS = committed_params()["models"]


def build(name, load_weights=True, **changes):
    """models.<name> of params.yaml with `changes`: (its entry, the model)."""
    torch.manual_seed(0)
    cfg = {**MODELS[name], **changes}
    return cfg, build_model(cfg, name, load_weights=load_weights)


def save_checkpoint(path, name, cfg, model) -> None:
    """As src/stages/train.py writes it."""
    torch.save({"model": name, "config": cfg, "classes": ["cat", "dog"], "best_epoch": 1,
                "state_dict": model.state_dict()}, path)


@pytest.fixture
def brightness_model(tmp_path):
    """Logistic regression that says dog for bright images and cat for dark ones, with probabilities < 1."""
    cfg, model = build("logistic", input_size=32)
    with torch.no_grad():
        model[-1].weight.fill_(1e-3)
        model[-1].bias.zero_()
    save_checkpoint(tmp_path / "model.pt", "logistic", cfg, model)
    return tmp_path / "model.pt"


@pytest.fixture
def photos(tmp_path):
    """Dark cats and bright dogs in nested folders, beside a hidden image, a hidden folder and a text file."""
    root = tmp_path / "photos"
    write_image(root / "b.jpg", (40, 40, 40), size=(300, 200))
    write_image(root / "a" / "dog.png", (220, 220, 220), mode="RGBA")
    write_image(root / "a" / "deeper" / "cat.JPEG", (30, 30, 30), fmt="JPEG", mode="L")
    write_image(root / "c.bmp", (230, 230, 230))
    write_image(root / ".hidden.jpg", (0, 0, 0))
    write_image(root / ".ipynb_checkpoints" / "x.jpg", (0, 0, 0))
    (root / "notes.txt").write_text("not an image")
    return root


def run_predict(capsys, *args):
    """(exit status, stdout, stderr) of `catdog predict args` run in this process."""
    try:
        predict.main([str(a) for a in args])
        code = 0
    except SystemExit as exit:
        code = exit.code
    out = capsys.readouterr()
    return code, out.out, out.err


def expected_dog_probability(model, path, size):
    """P(dog) from the model on the image decoded as prepare decodes it, scaled to [-1, 1] as in training."""
    x = torch.tensor(load_rgb(path, [size])[0][0])[None].float() / 127.5 - 1
    model.eval()
    with torch.no_grad():
        return torch.sigmoid(model(x)[0, 0]).item()


def test_one_file_as_a_text_line(capsys, photos, brightness_model):
    code, out, err = run_predict(capsys, photos / "b.jpg", "--model", brightness_model)
    assert code == 0 and err == ""
    file, label, probability = out.split()
    assert file == str(photos / "b.jpg") and label == "cat" and 0.5 < float(probability) < 1


def test_files_and_a_folder_as_json_in_order_skipping_hidden_and_non_images(capsys, photos, brightness_model):
    code, out, _ = run_predict(capsys, photos / "c.bmp", photos, "--model", brightness_model, "--json")
    rows = json.loads(out)
    assert code == 0
    assert [r["file"] for r in rows] == [str(photos / p) for p in
                                         ("c.bmp", "a/deeper/cat.JPEG", "a/dog.png", "b.jpg", "c.bmp")]
    assert [r["label"] for r in rows] == ["dog", "cat", "dog", "cat", "dog"]
    for row in rows:
        assert row["probability"] == row["probabilities"][row["label"]] > 0.5
        assert row["probabilities"]["cat"] + row["probabilities"]["dog"] == pytest.approx(1, abs=2e-6)
    # classified a few at a time (bounded memory), the same results up to float rounding
    in_twos = json.loads(run_predict(capsys, photos / "c.bmp", photos, "--model", brightness_model, "--json",
                                     "--batch-size", 2)[1])
    assert [(r["file"], r["label"]) for r in in_twos] == [(r["file"], r["label"]) for r in rows]
    assert [r["probability"] for r in in_twos] == pytest.approx([r["probability"] for r in rows], abs=1e-5)


def test_text_lines_are_aligned(capsys, photos, brightness_model):
    _, out, _ = run_predict(capsys, photos / "a", photos / "c.bmp", "--model", brightness_model)
    lines = out.splitlines()
    assert len(lines) == 3 and len({len(line) for line in lines}) == 1  # names padded to the longest


def test_bad_files_are_reported_and_the_rest_classified(tmp_path, photos, brightness_model):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes((photos / "b.jpg").read_bytes()[:200])
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [photos / "b.jpg", corrupt, tmp_path / "missing.jpg", empty, photos / "c.bmp"]
    result = subprocess.run([sys.executable, "-m", "catdog", "predict", *map(str, args), "--model",
                             str(brightness_model)], env=pipeline_env(), capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert [line.split()[:2] for line in result.stdout.splitlines()] == [[str(photos / "b.jpg"), "cat"],
                                                                         [str(photos / "c.bmp"), "dog"]]
    errors = result.stderr.splitlines()
    assert len(errors) == 3 and errors[0].startswith(f"catdog: error: {corrupt}: ")
    assert errors[1:] == [f"catdog: error: {tmp_path / 'missing.jpg'}: no such file or folder",
                          f"catdog: error: {empty}: no image files in this folder"]


def test_json_holds_the_errors_too(capsys, tmp_path, photos, brightness_model):
    code, out, err = run_predict(capsys, tmp_path / "missing.jpg", photos / "b.jpg", "--model", brightness_model,
                                 "--json")
    rows = json.loads(out)
    assert code == 1 and rows[0] == {"file": str(tmp_path / "missing.jpg"), "error": "no such file or folder"}
    assert rows[1]["label"] == "cat" and "missing.jpg" in err


@pytest.mark.parametrize("name, changes", [("cnn", {"input_size": 32}), ("numpy_deep", {"input_size": 32}),
                                           ("multitask", {"input_size": 32, "hidden": [16]}),
                                           ("mobilenet_v2_frozen", {"input_size": 32})])
def test_probability_is_the_models_output_on_the_prepare_decoding(capsys, tmp_path, photos, name, changes):
    cfg, model = build(name, **changes)
    save_checkpoint(tmp_path / "model.pt", name, cfg, model)
    code, out, _ = run_predict(capsys, photos, "--model", tmp_path / "model.pt", "--json")
    assert code == 0
    for row in json.loads(out):
        assert row["probabilities"]["dog"] == pytest.approx(expected_dog_probability(model, row["file"], 32),
                                                            abs=2e-6)
        assert ("brightness" in row) == (name == "multitask")


def test_a_resnet18_checkpoint_predicts_offline_without_imagenet_weights(capsys, tmp_path, photos, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no ImageNet file in the hub cache
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("tried to download"))
    cfg, model = build("resnet18_frozen", load_weights=False, input_size=32)
    save_checkpoint(tmp_path / "model.pt", "resnet18_frozen", cfg, model)
    code, out, _ = run_predict(capsys, photos / "b.jpg", "--model", tmp_path / "model.pt", "--json")
    assert code == 0
    assert json.loads(out)[0]["probabilities"]["dog"] == pytest.approx(
        expected_dog_probability(model, photos / "b.jpg", 32), abs=2e-6)


def test_a_checkpoint_from_an_mlflow_run(capsys, tmp_path, photos, brightness_model, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment("catdog", artifact_location=(tmp_path / "artifacts").as_uri())
    trained, untrained = client.create_run(experiment).info.run_id, client.create_run(experiment).info.run_id
    client.log_artifact(trained, str(brightness_model), "model")  # as train.py logs models/model.pt
    capsys.readouterr()  # MLflow's log lines on creating the store

    from_run = run_predict(capsys, photos, "--run-id", trained, "--json")
    assert from_run == run_predict(capsys, photos, "--model", brightness_model, "--json") and from_run[0] == 0
    with pytest.raises(CatdogError, match="cannot find MLflow run 0123abc in sqlite:///.*not found"):
        predict.main([str(photos), "--run-id", "0123abc"])
    with pytest.raises(CatdogError, match=f"run {untrained} has no artifact model/model.pt"):
        predict.main([str(photos), "--run-id", untrained])
    code, _, err = run_predict(capsys, photos, "--run-id", trained, "--model", brightness_model)
    assert code == 2 and "catdog predict: error: argument --model: not allowed with argument --run-id" in err


@pytest.mark.parametrize("changes, reason", [
    ({"arch": "tinyvgg"}, r"models.logistic.arch='tinyvgg' is unknown; valid: cnn, fc"),
    ({"arch": "cnn"}, "models.logistic.channels is missing: arch cnn needs it"),
])
def test_why_a_model_cannot_be_loaded_is_said(capsys, tmp_path, photos, brightness_model, monkeypatch, changes,
                                              reason):
    """A run's MLflow Model or a file whose checkpoint this catdog cannot build: the reason, not "no model"."""
    from mlflow.tracking import MlflowClient

    checkpoint = torch.load(brightness_model, weights_only=True)
    bad = tmp_path / "bad" / "model.pt"
    bad.parent.mkdir()
    torch.save({**checkpoint, "config": {**checkpoint["config"], **changes}}, bad)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment("catdog", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    client.log_artifact(run_id, str(bad), "model/artifacts")  # where mlflow_model.log puts the checkpoint
    capsys.readouterr()
    with pytest.raises(CatdogError, match=f"^MLflow run {run_id}'s model cannot be loaded: .*model.pt holds a "
                                          f"model this catdog cannot build \\({reason}"):
        predict.main([str(photos), "--run-id", run_id])
    with pytest.raises(CatdogError, match=f"^{bad} holds a model this catdog cannot build \\({reason}"):
        predict.main([str(photos), "--model", str(bad)])


def test_no_checkpoint_says_how_to_get_one(tmp_path, photos, monkeypatch):
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)  # a repository without models/model.pt
    with pytest.raises(CatdogError) as error:
        predict.main([str(photos)])
    message = str(error.value)
    assert str(tmp_path / "models" / "model.pt") in message and "dvc repro" in message and "--run-id" in message
    not_a_checkpoint = tmp_path / "model.pt"
    Image.new("RGB", (4, 4)).save(not_a_checkpoint, format="PNG")
    with pytest.raises(CatdogError, match="cannot read the checkpoint"):
        predict.main([str(photos), "--model", str(not_a_checkpoint)])
