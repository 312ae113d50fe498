"""Stage `plot`: the training curves, the confusion matrix and the error analysis (most confidently
misclassified images, predicted-probability histogram, calibration), also attached to the model's MLflow run."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, also in DVC's temp exp dirs

from catdog import tracking  # noqa: E402

tracking.start_helper()  # first: its MLflow run's helper process imports MLflow while this one imports matplotlib

import numpy as np  # noqa: E402

from catdog import CatdogError, cli, plots  # noqa: E402
from catdog.config import load_params  # noqa: E402
from catdog.dataset import load_manifest  # noqa: E402
from catdog.paths import (  # noqa: E402
    CALIBRATION_FILE,
    CALIBRATION_PNG,
    CONFUSION_PNG,
    CURVES_PNG,
    HISTOGRAM_PNG,
    HISTORY_FILE,
    MISCLASSIFIED_PNG,
    PREDICTIONS_FILE,
    PREPARED_DIR,
    TEST_METRICS,
)
from catdog.tables import read_rows, write_rows  # noqa: E402

PNGS = (CURVES_PNG, CONFUSION_PNG, MISCLASSIFIED_PNG, HISTOGRAM_PNG, CALIBRATION_PNG)


def gallery_images(manifest: dict, predictions: list[dict]) -> np.ndarray:
    """The test images at the largest prepared size (the most readable), memory-mapped, in predictions' order."""
    if manifest["splits"]["test"]["files"] != [row["file"] for row in predictions]:
        raise CatdogError(f"{PREDICTIONS_FILE} does not list the test images of {PREPARED_DIR}: "
                          "run `dvc repro evaluate` first")
    # Same layout as dataset.load_split, which would read every image; the gallery needs a dozen.
    path = PREPARED_DIR / f"x{max(manifest['sizes'])}_test.npy"
    return np.load(path, mmap_mode="r", allow_pickle=False)


def main() -> None:
    with tracking.resumed_run() as run:  # first: its helper process starts MLflow while this one draws
        plot(run)


def plot(run) -> None:
    model = load_params()["model"]
    accuracy = json.loads(TEST_METRICS.read_text())["accuracy"]
    plots.training_curves(read_rows(HISTORY_FILE), f"{model} (test accuracy {accuracy:.3f})", CURVES_PNG)
    predictions = read_rows(PREDICTIONS_FILE)
    manifest = load_manifest()
    classes = manifest["classes"]  # the second is the positive class, whose probability predictions.csv holds
    title = f"{model}: test set"
    plots.confusion_matrix([r["actual"] for r in predictions], [r["predicted"] for r in predictions], classes,
                           title, CONFUSION_PNG)
    plots.misclassified_gallery(predictions, gallery_images(manifest, predictions), classes, title, MISCLASSIFIED_PNG)
    plots.probability_histogram(predictions, classes, title, HISTOGRAM_PNG)
    plots.calibration_curve(predictions, classes, title, CALIBRATION_PNG)
    write_rows(CALIBRATION_FILE, plots.calibration_points(predictions, classes), plots.CALIBRATION_COLUMNS)
    for png in PNGS:
        run.log_artifact(png, artifact_path="plots")
    print(f"wrote {', '.join(map(str, PNGS))} and {CALIBRATION_FILE}")


if __name__ == "__main__":
    cli.run(main)
