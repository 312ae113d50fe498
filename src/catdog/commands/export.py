"""`catdog export --format onnx [--model PATH] [--out FILE]`: a trained model as an ONNX file for ONNX Runtime,
written only once ONNX Runtime's outputs on the test split match PyTorch's.

The file takes what the model takes: float32 images (N, 3, S, S) scaled to [-1, 1] as in training
(data.tensors.to_input: uint8 / 127.5 - 1), N free; it gives the model's outputs (N, k): column 0 the cat/dog logit
(P(classes[1]) = sigmoid), a multi-task model's column 1 the brightness. The classes, the input size and the scaling
are in the file's metadata. The NumPy network (arch numpy) is exported as the same stack of linear layers and
activations in torch, checked against the NumPy outputs like any other model."""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from catdog import CatdogError
from catdog.data.prepared import load_split
from catdog.data.tensors import to_input
from catdog.device import CPU
from catdog.files import atomic_path
from catdog.inference.forward import predict
from catdog.inference.onnx import export_onnx, numpy_as_torch
from catdog.models.architectures import load_checkpoint
from catdog.models.numpy_model import NumpyModel
from catdog.paths import MODEL_FILE, PREPARED_DIR, repo_root

FORMATS = ("onnx",)
ONNX_FILE = Path("models/model.onnx")
TOLERANCE = 1e-4  # max |ONNX Runtime - PyTorch| over every output of every test image, float32 on the CPU
BATCH = 64        # images per forward pass in the check, both sides; the last batch is smaller (dynamic N)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="catdog export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", required=True, metavar="FORMAT", help=f"one of: {', '.join(FORMATS)}")
    parser.add_argument("--model", type=Path, metavar="PATH",
                        help=f"the checkpoint to export (default: {MODEL_FILE} of this repository)")
    parser.add_argument("--out", type=Path, metavar="FILE", help=f"where to write it (default: {ONNX_FILE})")
    return parser.parse_args(argv)


def add_metadata(path: Path, checkpoint: dict) -> None:
    import onnx

    proto = onnx.load(str(path))
    metadata = {"catdog_model": checkpoint["model"], "classes": json.dumps(checkpoint["classes"]),
                "input_size": str(checkpoint["config"]["input_size"]),
                "input": "float32 (N, 3, S, S) RGB, uint8 / 127.5 - 1",
                "outputs": "column 0: logit of classes[1]; column 1 (multitask): brightness in [0, 1]"}
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def onnx_outputs(path: Path, images: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """ONNX Runtime's outputs (N, k) for uint8 images (N, 3, S, S), scaled as in training."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: to_input(torch.from_numpy(images[i:i + batch]), CPU).numpy()})[0]
                           for i in range(0, len(images), batch)])


def max_difference(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise CatdogError(f"ONNX Runtime gives outputs of shape {a.shape}, PyTorch {b.shape}")
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def size_text(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.1f} MiB" if n_bytes >= 2**20 else f"{n_bytes / 2**10:.1f} KiB"


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.format not in FORMATS:
        raise CatdogError(f"--format {args.format}: unknown format; valid: {', '.join(FORMATS)}")
    root = repo_root()
    model_path = args.model or root / MODEL_FILE
    out = args.out or root / ONNX_FILE
    if not model_path.is_file():
        raise CatdogError(f"no checkpoint at {model_path}: train one with `dvc repro`, or pass --model PATH")
    checkpoint, model = load_checkpoint(model_path)
    size = checkpoint["config"]["input_size"]
    prepared = root / PREPARED_DIR
    if not prepared.is_dir():
        raise CatdogError(f"{prepared} is missing: run `dvc repro prepare`; the export is checked on its test split")
    images = load_split("test", size, prepared)[0]
    if not len(images):
        raise CatdogError(f"the test split in {prepared} is empty: nothing to check the export on")

    module = numpy_as_torch(model) if isinstance(model, NumpyModel) else model
    with atomic_path(out) as tmp:  # removed, not renamed, on any error below: nothing is written
        export_onnx(module, size, tmp)
        add_metadata(tmp, checkpoint)
        got = onnx_outputs(tmp, images)
        expected = predict(model, torch.from_numpy(images), BATCH, CPU, precision="float32").numpy()
        diff = max_difference(got, expected)
        if not diff <= TOLERANCE:  # NaN fails too
            raise CatdogError(f"ONNX Runtime's outputs differ from PyTorch's by up to {diff:.3g} on the "
                              f"{len(images)} test images (more than {TOLERANCE:g}): {out} not written")
        n_bytes = tmp.stat().st_size
    print(f"{out}: {size_text(n_bytes)}, {len(images)} test images checked in ONNX Runtime, "
          f"max abs diff from PyTorch {diff:.2g}")
