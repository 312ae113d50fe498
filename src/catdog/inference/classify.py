"""Classifying image files with a trained model: each decoded, converted and resized exactly as `prepare` does
for training (data.decode.load_rgb), then scaled as in training; what `catdog predict` and the served MLflow Model
answer."""

from pathlib import Path

import numpy as np
import torch

from catdog import error_text
from catdog.data.decode import load_rgb
from catdog.data.images import is_image
from catdog.inference.forward import predict


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
    (inference.forward.runner), made once for every batch; by default PyTorch's, forward.predict."""
    classes, size = checkpoint["classes"], checkpoint["config"]["input_size"]
    rows, arrays = [], []
    for path, error in items:
        if error is None:
            try:
                arrays.append(load_rgb(path, [size])[0][0])
            except Exception as e:  # any unreadable file is reported, never fatal, as in prepare
                error = error_text(e)
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
