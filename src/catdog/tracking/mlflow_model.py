"""Every trained model as an MLflow Model: a pyfunc that takes what a client has, image bytes, and gives labels.

`mlflow.pyfunc.load_model("runs:/<id>/model")`, `models:/catdog@champion` and `mlflow models serve` all run the
same code as `catdog predict`: the checkpoint that `train` wrote, this package (logged with it as `code_paths`,
so it loads in a fresh Python outside the repository) and inference.classify, which decodes, converts and resizes
each image as `prepare` does and scales it as training does.

Input: a column `image` of base64-encoded image files (JPEG, PNG, ...). Output: per image `label` and
`p_<positive class>`, its probability: `p_dog` with the default data.positive_class.
"""

import base64
import binascii
import contextlib
import io
import shutil
import tempfile
from pathlib import Path

import mlflow
import pandas as pd  # MLflow imports it anyway
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, Schema

ARTIFACT_PATH = "model"      # runs:/<run id>/model
CHECKPOINT = "checkpoint"    # its artifact key; the file lands as artifacts/model.pt in the model folder
REQUIREMENTS = ("torch", "torchvision", "numpy", "pillow", "pandas", "tqdm", "mlflow", "onnxruntime", "onnx",
                "onnxscript")


def probability_column(positive: str) -> str:
    """The output column of the positive class's probability: p_dog with the default data.positive_class."""
    return f"p_{positive}"


def signature(positive: str) -> ModelSignature:
    """What the model takes and answers; positive: the checkpoint's classes[1]."""
    return ModelSignature(inputs=Schema([ColSpec("string", "image")]),
                          outputs=Schema([ColSpec("string", "label"), ColSpec("double", probability_column(positive))]))


class CatdogModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        import torch

        from catdog.inference.forward import runner
        from catdog.models.architectures import load_checkpoint

        self.checkpoint, self.model = load_checkpoint(context.artifacts[CHECKPOINT])
        self.model.eval()
        # The forward pass `catdog predict` picks by default: ONNX Runtime on the CPU for frozen pretrained models
        # (PyTorch where onnxruntime is not installed, as in an environment built from REQUIREMENTS alone). Made
        # once, at load, so that the export's seconds are paid at start-up and not by a request; into a temporary
        # folder, not the server's working directory.
        self.run = runner(self.model, self.checkpoint["config"]["input_size"], torch.device("cpu"),
                                      cache=None)

    def predict(self, context, model_input: pd.DataFrame, params=None):  # the hint: no MLflow warning
        import torch

        from catdog.inference.classify import classify

        sources = []
        for i, text in enumerate(model_input["image"]):
            try:
                sources.append((io.BytesIO(base64.b64decode(text, validate=True)), None))
            except (binascii.Error, TypeError, ValueError):
                raise MlflowException(f"image {i} is not base64: send each image file base64-encoded in the "
                                      "column `image`", INVALID_PARAMETER_VALUE) from None
        rows = classify(self.model, sources, self.checkpoint, torch.device("cpu"), batch_size=64, run=self.run)
        # Pillow names the file it could not read: here the payload's BytesIO object, which tells a client nothing.
        bad = [(i, row["error"].replace(f" {source!r}", "")) for i, ((source, _), row) in enumerate(zip(sources, rows))
               if "error" in row]
        if bad:
            raise MlflowException("; ".join(f"image {i} is not a readable image ({error})" for i, error in bad)
                                  + ": send JPEG, PNG, BMP, GIF, WebP or TIFF files", INVALID_PARAMETER_VALUE)
        positive = self.checkpoint["classes"][1]
        return pd.DataFrame({"label": [row["label"] for row in rows],
                             probability_column(positive): [row["probabilities"][positive] for row in rows]})


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def example_image(array) -> bytes:
    """A (3, s, s) uint8 image as PNG bytes: the logged input example, a real image of the data."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array.transpose(1, 2, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def requirements() -> list[str]:
    """The installed versions, pinned: given rather than inferred (MLflow would load the model to infer them)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pass
    return pins


@contextlib.contextmanager
def _without_redundant_checks():
    """Two checks of mlflow.pyfunc.log_model that cannot fail here and cost `train` 4 s, most of it for a short
    training. Its serving-input check loads the logged model and predicts its input example in this process,
    importing torch (2 s; an ONNX export more for a frozen backbone); tests/test_mlflow_model.py loads, predicts
    and serves the logged models instead. Its requirements check maps every installed file to its package (1.6 s)
    to compare the pins with the installed versions, which requirements() read. mock.patch fails loudly if MLflow
    renames either."""
    from unittest import mock

    with mock.patch("mlflow.models.utils._validate_serving_input"), \
            mock.patch("mlflow.utils.environment.warn_dependency_requirement_mismatches"):
        yield


def log(checkpoint: str, example: bytes | None = None, positive: str | None = None):
    """Log the checkpoint as the active run's MLflow Model `model` (a LoggedModel: the UI's Models column).
    positive: its classes[1], read from the checkpoint when not given (which imports torch: the stage gives it)."""
    if positive is None:
        from catdog.models.architectures import checkpoint_classes

        positive = checkpoint_classes(checkpoint)[1]

    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "catdog"  # the sources alone, without __pycache__
        shutil.copytree(Path(__file__).resolve().parents[1], package, ignore=shutil.ignore_patterns("__pycache__"))
        with _without_redundant_checks():
            return mlflow.pyfunc.log_model(
                name=ARTIFACT_PATH, python_model=str(package / "tracking" / "pyfunc_code.py"),  # code, no pickle
                artifacts={CHECKPOINT: checkpoint},
                code_paths=[str(package)], signature=signature(positive),
                input_example=pd.DataFrame({"image": [encode(example)]}) if example is not None else None,
                pip_requirements=requirements())
