"""`catdog predict IMAGE|FOLDER ...`: classify your own images with a trained model, each decoded, converted and
resized exactly as `prepare` does for training (data.decode.load_rgb), then scaled as in training."""

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from catdog import CatdogError
from catdog.commands.options import add_model_options, device_arg
from catdog.config import INFERENCE
from catdog.inference.classify import classify, list_inputs
from catdog.inference.forward import runner
from catdog.tracking.checkpoints import load_model


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="catdog predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="IMAGE|FOLDER",
                        help="image files, or folders searched recursively (hidden files and folders skipped)")
    add_model_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of text lines")
    parser.add_argument("--inference", choices=INFERENCE, default="auto",
                        help="the engine: auto (ONNX Runtime on the CPU for frozen pretrained models, where it is "
                             "faster; PyTorch otherwise), torch or onnxruntime (CPU only)")
    parser.add_argument("--batch-size", type=int, default=64, help="images decoded and classified at once")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.batch_size < 1:
        raise CatdogError(f"--batch-size {args.batch_size} must be at least 1")
    checkpoint, model = load_model(args.model, args.run_id)
    device = device_arg(args.device)
    model.to(device)
    run = runner(model, checkpoint["config"]["input_size"], device, engine=args.inference, cli=True)

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
