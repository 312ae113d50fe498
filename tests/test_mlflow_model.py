"""The MLflow Model every run logs (catdog.tracking.mlflow_model), for every kind of model: what it answers equals
`catdog predict`'s answer on the same files, and bad payloads are refused with a message naming the problem."""

import base64

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from catdog.inference.classify import classify, list_inputs
from catdog.tracking import mlflow_model
from catdog.tracking.checkpoints import read_checkpoint
from conftest import write_image
from test_export import TINY, save_checkpoint


@pytest.fixture
def photos(tmp_path):
    files = [tmp_path / "a.jpg", tmp_path / "b.png", tmp_path / "c.JPG"]
    for i, path in enumerate(files):
        write_image(path, (60 + 70 * i, 90, 200 - 60 * i), size=(30 + 7 * i, 22), fmt="JPEG" if i != 1 else None)
    return files


@pytest.mark.parametrize("kind", TINY)
def test_the_logged_model_answers_as_catdog_predict(tmp_path, photos, kind):
    checkpoint_file = tmp_path / "model.pt"
    save_checkpoint(checkpoint_file, kind)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run() as run:
        mlflow_model.log(str(checkpoint_file), photos[0].read_bytes())
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    images = pd.DataFrame({"image": [base64.b64encode(p.read_bytes()).decode() for p in photos]})
    answer = model.predict(images)

    checkpoint, torch_model = read_checkpoint(checkpoint_file)
    expected = classify(torch_model, list_inputs(photos), checkpoint, "cpu", batch_size=64)
    assert list(answer["label"]) == [row["label"] for row in expected]
    assert list(answer["p_dog"]) == pytest.approx([row["probabilities"]["dog"] for row in expected], abs=1e-6)

    with pytest.raises(MlflowException, match=r"image 1 is not a readable image \(UnidentifiedImageError"):
        model.predict(pd.DataFrame({"image": [images["image"][0], base64.b64encode(b"not an image").decode()]}))
    with pytest.raises(MlflowException, match="image 0 is not base64"):
        model.predict(pd.DataFrame({"image": ["***"]}))


def test_the_served_column_follows_the_positive_class(tmp_path, photos):
    """A model trained with data.positive_class=cat (classes [dog, cat]) answers p_cat, its signature says so, and
    label and p_cat agree."""
    import torch

    checkpoint_file = tmp_path / "model.pt"
    save_checkpoint(checkpoint_file, "fc")
    checkpoint = torch.load(checkpoint_file, weights_only=True)
    torch.save({**checkpoint, "classes": ["dog", "cat"]}, checkpoint_file)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run() as run:
        mlflow_model.log(str(checkpoint_file), photos[0].read_bytes())  # the positive class read from the file
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert model.metadata.get_output_schema().input_names() == ["label", "p_cat"]
    answer = model.predict(pd.DataFrame({"image": [base64.b64encode(p.read_bytes()).decode() for p in photos]}))
    assert list(answer.columns) == ["label", "p_cat"]
    assert list(answer["label"]) == ["cat" if p > 0.5 else "dog" for p in answer["p_cat"]]
