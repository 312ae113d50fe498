"""`catdog predict IMAGE|FOLDER ...`: classify your own images with a trained model, each decoded, converted and
resized exactly as `prepare` does for training (images.load_rgb), then scaled as in training (training.to_input)."""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from catdog import CatdogError, onnx_engine
from catdog.config import DEVICES, INFERENCE
from catdog.images import is_image, load_rgb
from catdog.models import load_checkpoint
from catdog.paths import MODEL_FILE, repo_root
from catdog.training import pick_device, predict

RUN_ARTIFACT = "model/model.pt"  # where src/stages/train.py logged the checkpoint before it logged an MLflow Model


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="catdog predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="IMAGE|FOLDER",
                        help="image files, or folders searched recursively (hidden files and folders skipped)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="PATH|URI",
                        help=f"a checkpoint file (default: {MODEL_FILE} of this repository), or an MLflow Model "
                             "URI: models:/catdog@champion, models:/catdog/3, runs:/RUN_ID/model")
    source.add_argument("--run-id", metavar="ID", help=f"the checkpoint in this MLflow run's MLflow Model (or {RUN_ARTIFACT} of older runs)")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of text lines")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--inference", choices=INFERENCE, default="auto",
                        help="the engine: auto (ONNX Runtime on the CPU for frozen pretrained models, where it is "
                             "faster; PyTorch otherwise), torch or onnxruntime (CPU only)")
    parser.add_argument("--batch-size", type=int, default=64, help="images decoded and classified at once")
    return parser.parse_args(argv)


def read_checkpoint(path: Path) -> tuple[dict, object]:
    if not path.is_file():
        raise CatdogError(f"no checkpoint at {path}: train one with `dvc repro`, or pass --model PATH or --run-id ID")
    return load_checkpoint(path)


def run_checkpoint(run_id: str) -> tuple[dict, object]:
    """The checkpoint an MLflow run logged, from the store the pipeline logs to."""
    from mlflow.exceptions import MlflowException  # late: mlflow takes seconds to import

    from catdog.registry import client, download_checkpoint, mlflow_error

    mlflow_client, uri = client()
    try:
        mlflow_client.get_run(run_id)
    except MlflowException as error:
        raise mlflow_error(error, uri, f"cannot find MLflow run {run_id} in {uri}") from None
    with tempfile.TemporaryDirectory() as tmp:
        try:  # the run's MLflow Model, which holds the checkpoint
            return read_checkpoint(download_checkpoint(f"runs:/{run_id}/model", tmp))
        except CatdogError:
            pass
        try:  # a run logged before catdog logged MLflow Models
            path = mlflow_client.download_artifacts(run_id, RUN_ARTIFACT, tmp)
        except (MlflowException, OSError):
            raise CatdogError(f"MLflow run {run_id} has no artifact {RUN_ARTIFACT} and no MLflow Model: "
                              "it is not a training run, or it did not finish") from None
        return read_checkpoint(Path(path))


def model_checkpoint(model_uri: str) -> tuple[dict, object]:
    """The checkpoint inside an MLflow Model: what the served model runs, so the same predictions."""
    from catdog.registry import download_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        return read_checkpoint(download_checkpoint(model_uri, tmp))


def load_model(model: str | None, run_id: str | None) -> tuple[dict, object]:
    """The checkpoint and model of --model (a file or an MLflow Model URI) or --run-id, else this repository's."""
    if run_id:
        return run_checkpoint(run_id)
    if model and model.startswith(("models:/", "runs:/")):
        return model_checkpoint(model)
    return read_checkpoint(Path(model) if model else repo_root() / MODEL_FILE)


def device_arg(name: str):
    try:
        return pick_device(name)
    except CatdogError:
        raise CatdogError(f"--device {name}: no such device here; use auto or cpu") from None


def list_inputs(paths: list[Path]) -> list[tuple[Path, str | None]]:
    """(file, None) per image to classify and (path, reason) per path that gives none, in the order given; a
    folder gives its images sorted, skipping hidden files and folders as prepare does."""
    items = []
    for path in paths:
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if is_image(p, path))
            items += [(p, None) for p in images] or [(path, "no image files in this folder")]
        else:
            items.append((path, None if path.exists() else "no such file or folder"))
    return items


def classify(model, items, checkpoint: dict, device, batch_size: int, run=None) -> list[dict]:
    """One row per item: file, label, its probability and each class's, or file and error. run: the forward pass
    (onnx_engine.runner), made once for every batch; by default PyTorch's, training.predict."""
    classes, size = checkpoint["classes"], checkpoint["config"]["input_size"]
    rows, arrays = [], []
    for path, error in items:
        if error is None:
            try:
                arrays.append(load_rgb(path, [size])[0][0])
            except Exception as e:  # any unreadable file is reported, never fatal, as in prepare
                error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        rows.append({"file": str(path)} | ({"error": error} if error else {}))
    if arrays:
        x = torch.from_numpy(np.stack(arrays))
        outputs = run(x, batch_size) if run is not None else predict(model, x, batch_size, device)
        for row, output in zip([r for r in rows if "error" not in r], outputs):
            p = torch.sigmoid(output[0]).item()  # P(classes[1]); > 0.5 picks it, as in evaluate
            row.update(label=classes[int(p > 0.5)], probability=round(max(p, 1 - p), 6),
                       probabilities={classes[0]: round(1 - p, 6), classes[1]: round(p, 6)})
            if len(output) > 1:  # a multi-task model also predicts the image's brightness
                row["brightness"] = round(output[1].item(), 6)
    return rows


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.batch_size < 1:
        raise CatdogError(f"--batch-size {args.batch_size} must be at least 1")
    checkpoint, model = load_model(args.model, args.run_id)
    device = device_arg(args.device)
    model.to(device)
    run = onnx_engine.runner(model, checkpoint["config"]["input_size"], device, engine=args.inference, cli=True)

    items = list_inputs(args.paths)
    name_width = max(len(str(path)) for path, _ in items)
    label_width = max(len(c) for c in checkpoint["classes"])
    rows = []
    # Decode and classify a batch at a time: memory stays bounded however big the folder.
    with tqdm(total=len(items), unit="image", disable=None) as bar:  # None: shown only when stderr is a terminal
        for start in range(0, len(items), args.batch_size):
            for row in classify(model, items[start:start + args.batch_size], checkpoint, device, args.batch_size,
                                run):
                rows.append(row)
                if "error" in row:
                    tqdm.write(f"catdog: error: {row['file']}: {row['error']}", file=sys.stderr)
                elif not args.json:
                    tqdm.write(f"{row['file']:<{name_width}}  {row['label']:<{label_width}}  "
                               f"{row['probability']:.4f}", file=sys.stdout)
                bar.update()
    if args.json:
        print(json.dumps(rows, indent=2))
    if any("error" in row for row in rows):
        sys.exit(1)
