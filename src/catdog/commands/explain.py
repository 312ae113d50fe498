"""`catdog explain IMAGE|FOLDER ... --out DIR`: where a trained model looks in your own photos.

Per image, DIR/<name>.png shows the picture with the model's attribution map for the class it predicts over it
(Grad-CAM or occlusion, as the model's architecture is registered: models/registry.py), and the prediction
and its probability in the title. The image is decoded and resized exactly as for `catdog predict`; a file that
cannot be read gets the same one-line error and the others are still explained.

    catdog explain photos/ --out explained/
    catdog explain --model models:/catdog@champion cat.jpg --out explained/
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from catdog import CatdogError, error_text
from catdog.analysis import attribution, attribution_figures
from catdog.analysis.figures import plt, save
from catdog.commands.options import add_model_options, device_arg
from catdog.data.decode import load_rgb, viewed_size
from catdog.inference.classify import list_inputs
from catdog.inference.forward import predict
from catdog.tracking.checkpoints import load_model

SHOWN_SIDE = 512  # the longer side of the picture in the figure


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="catdog explain", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="IMAGE|FOLDER",
                        help="image files, or folders searched recursively (hidden files and folders skipped)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="where the PNGs go (created)")
    add_model_options(parser)
    return parser.parse_args(argv)


def shown_picture(square: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The decoded square (3, s, s) stretched back to the picture's own proportions, at most SHOWN_SIDE wide/high."""
    scale = SHOWN_SIDE / max(size)
    width, height = (max(1, round(side * min(scale, 1))) for side in size)
    return np.asarray(Image.fromarray(square.transpose(1, 2, 0)).resize((width, height), Image.Resampling.BILINEAR))


def output_name(path: Path, taken: set[str]) -> str:
    """<stem>.png, or <stem>-2.png ... when two inputs share a stem."""
    name, k = f"{path.stem}.png", 1
    while name in taken:
        k += 1
        name = f"{path.stem}-{k}.png"
    taken.add(name)
    return name


def explain_one(model, checkpoint: dict, path: Path, device, out: Path) -> dict:
    cfg, classes = checkpoint["config"], checkpoint["classes"]
    size = viewed_size(path)
    (square, shown), _ = load_rgb(path, [cfg["input_size"], SHOWN_SIDE])
    x = torch.from_numpy(square[None].copy())
    p = torch.sigmoid(predict(model, x, 1, device)[0, 0]).item()  # P(classes[1])
    predicted = int(p > 0.5)
    heat = attribution.attribute(model, cfg, x, [predicted], device)[0]
    fig, ax = plt.subplots(figsize=(6.4, 6.4 * size[1] / size[0] + 0.9), layout="constrained")
    colours = attribution_figures.overlay(ax, shown_picture(shown, size), heat)
    fig.colorbar(colours, ax=ax, shrink=0.7, label=f"evidence for {classes[predicted]} (1 = the peak)")
    ax.set_title(f"{path.name}\n{checkpoint['model']} predicts {classes[predicted]}, P = {max(p, 1 - p):.3f} "
                 f"({attribution.method(cfg)})", fontsize=10)
    save(fig, out)
    return {"file": str(path), "label": classes[predicted], "probability": round(max(p, 1 - p), 6), "png": str(out)}


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    checkpoint, model = load_model(args.model, args.run_id)
    device = device_arg(args.device)
    model.to(device)
    out = args.out.resolve()
    # A folder explained into a subfolder of itself: last run's PNGs are outputs, not photos to explain
    items = [(path, error) for path, error in list_inputs(args.paths) if out not in path.resolve().parents]
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CatdogError(f"--out {args.out}: cannot create it ({error.strerror}); pick a writable folder") from None
    taken, failed = set(), 0
    for path, error in items:
        if error is None:
            try:
                row = explain_one(model, checkpoint, path, device, args.out / output_name(path, taken))
                print(f"{row['file']}  {row['label']}  {row['probability']:.4f}  -> {row['png']}")
                continue
            except CatdogError:
                raise
            except Exception as e:  # an unreadable image is reported, never fatal, as in catdog predict
                error = error_text(e)
        failed += 1
        print(f"catdog: error: {path}: {error}", file=sys.stderr)
    if failed:
        sys.exit(1)
