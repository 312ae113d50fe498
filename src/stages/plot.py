"""Stage `plot`: the training-curves and confusion-matrix PNGs, also attached to the model's MLflow run."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, also in DVC's temp exp dirs

import mlflow  # noqa: E402

from catdog import cli, plots  # noqa: E402
from catdog.config import load_params  # noqa: E402
from catdog.paths import CONFUSION_PNG, CURVES_PNG, HISTORY_FILE, PREDICTIONS_FILE, TEST_METRICS  # noqa: E402
from catdog.tables import read_rows  # noqa: E402
from catdog.tracking import resumed_run  # noqa: E402


def main() -> None:
    model = load_params()["model"]
    accuracy = json.loads(TEST_METRICS.read_text())["accuracy"]
    plots.training_curves(read_rows(HISTORY_FILE), f"{model} (test accuracy {accuracy:.3f})", CURVES_PNG)
    predictions = read_rows(PREDICTIONS_FILE)
    classes = sorted({row["actual"] for row in predictions} | {row["predicted"] for row in predictions})
    plots.confusion_matrix([r["actual"] for r in predictions], [r["predicted"] for r in predictions], classes,
                           f"{model}: test set", CONFUSION_PNG)
    with resumed_run() as run:
        if run:
            for png in (CURVES_PNG, CONFUSION_PNG):
                mlflow.log_artifact(str(png), artifact_path="plots")
    print(f"wrote {CURVES_PNG} and {CONFUSION_PNG}")


if __name__ == "__main__":
    cli.run(main)
