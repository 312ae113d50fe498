"""The options `catdog predict` and `catdog explain` share: which trained model, on which device."""

import argparse

from catdog import CatdogError
from catdog.config import DEVICES
from catdog.device import pick_device
from catdog.paths import MODEL_FILE
from catdog.tracking.checkpoints import RUN_ARTIFACT


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model PATH|URI or --run-id ID (else this repository's checkpoint), and --device."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="PATH|URI",
                        help=f"a checkpoint file (default: {MODEL_FILE} of this repository), or an MLflow Model "
                             "URI: models:/catdog@champion, models:/catdog/3, runs:/RUN_ID/model")
    source.add_argument("--run-id", metavar="ID",
                        help=f"the checkpoint in this MLflow run's MLflow Model (or {RUN_ARTIFACT} of older runs)")
    parser.add_argument("--device", choices=DEVICES, default="auto")


def device_arg(name: str):
    try:
        return pick_device(name)
    except CatdogError:
        raise CatdogError(f"--device {name}: no such device here; use auto or cpu") from None
