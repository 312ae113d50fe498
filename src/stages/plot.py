"""Stage `plot`: the training curves, the confusion matrix, the error analysis (most confidently misclassified
images, predicted-probability histogram, calibration) and what the model learned and where it looks (its first
layer as pictures, attribution maps over a fixed set of test images), also attached to the model's MLflow run."""

import contextlib
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, also in DVC's temp exp dirs

from catdog import warm  # noqa: E402

warm.hand_over(__name__)  # where a warm process is up, this stage runs forked from it, imports done (catdog.warm)

from catdog.tracking import runs  # noqa: E402

runs.start_helper()  # first: its MLflow run's helper process imports MLflow while this one imports matplotlib

import numpy as np  # noqa: E402

from catdog import CatdogError, entrypoint  # noqa: E402
from catdog.analysis import attribution_figures, figures, localisation  # noqa: E402
from catdog.config import load_params  # noqa: E402
from catdog.data.prepared import load_boxes, load_manifest  # noqa: E402
from catdog.files import read_rows, write_rows  # noqa: E402
from catdog.paths import (  # noqa: E402
    CALIBRATION_FILE,
    CALIBRATION_PNG,
    CONFUSION_PNG,
    CURVES_PNG,
    DRAWN_FILE,
    HEATMAPS_PNG,
    HISTOGRAM_PNG,
    HISTORY_FILE,
    LEARNED_PNG,
    MISCLASSIFIED_PNG,
    PREDICTIONS_FILE,
    PREPARED_DIR,
    TEST_METRICS,
)

PNGS = (CURVES_PNG, CONFUSION_PNG, MISCLASSIFIED_PNG, HISTOGRAM_PNG, CALIBRATION_PNG, LEARNED_PNG, HEATMAPS_PNG)


def gallery_images(manifest: dict, predictions: list[dict]) -> np.ndarray:
    """The test images at the largest prepared size (the most readable), memory-mapped, in predictions' order."""
    if manifest["splits"]["test"]["files"] != [row["file"] for row in predictions]:
        raise CatdogError(f"{PREDICTIONS_FILE} does not list the test images of {PREPARED_DIR}: "
                          "run `dvc repro evaluate` first")
    # Same layout as data.prepared.load_split, which would read every image; the gallery needs a dozen.
    path = PREPARED_DIR / f"x{max(manifest['sizes'])}_test.npy"
    return np.load(path, mmap_mode="r", allow_pickle=False)


def what_it_learned(title: str, manifest: dict, predictions: list[dict], shown_images: np.ndarray) -> None:
    """The first layer as pictures, and the attribution maps of the fixed test images, each with its true class,
    P(positive) and whether the map peaks on the animal: from the arrays evaluate computed (DRAWN_FILE)."""
    if not DRAWN_FILE.is_file():
        raise CatdogError(f"{DRAWN_FILE} is missing: run `dvc repro evaluate` first")
    with np.load(DRAWN_FILE, allow_pickle=False) as stored:
        drawn = dict(stored)
    classes = manifest["classes"]
    attribution_figures.learned(str(drawn["first_layer_kind"]), drawn["first_layer"], title, LEARNED_PNG, classes,
                                count=int(drawn["first_layer_count"]))
    chosen, maps = drawn["indices"], drawn["maps"]
    boxes, shown_boxes = load_boxes("test", maps.shape[-1]), load_boxes("test", shown_images.shape[-1])
    captions = []
    for k, i in enumerate(chosen):
        caption = f"{figures.short_name(predictions[i]['file'])}\ntrue {classes[drawn['targets'][k]]}, " \
                  f"P({classes[1]}) = {float(predictions[i]['probability']):.3f}"
        if boxes is not None and not np.isnan(boxes[i]).any():
            hit = localisation.peak_in_box(maps[k:k + 1], boxes[i:i + 1])[0]
            caption += ", peak on the animal" if hit else ", peak off the animal"
        captions.append(caption)
    attribution_figures.heatmap_gallery(shown_images[chosen], maps, captions, f"{title}: {drawn['method']}",
                                        HEATMAPS_PNG, None if shown_boxes is None else shown_boxes[chosen])


@contextlib.contextmanager
def on_the_second_core(draw, *args):
    """draw(*args) beside the block, in a forked process, where the second core is free: in a stage forked by the
    warm process, whose MLflow helper imports nothing (the first layer and the heatmaps are half the drawing). Else
    after the block, here: a cold stage's helper is importing MLflow on that core (measured: 0.2 s slower forked).
    An error of draw's is raised here."""
    if not warm.forked():
        yield
        draw(*args)
        return
    with ProcessPoolExecutor(1, mp_context=get_context("fork")) as drawer:
        drawn = drawer.submit(draw, *args)
        yield
        drawn.result()


def main() -> None:
    with runs.resumed_run() as run:  # first: its helper process starts MLflow while this one draws
        plot(run)


def plot(run) -> None:
    model = load_params()["model"]
    accuracy = json.loads(TEST_METRICS.read_text())["accuracy"]
    figures.training_curves(read_rows(HISTORY_FILE), f"{model} (test accuracy {accuracy:.3f})", CURVES_PNG)
    predictions = read_rows(PREDICTIONS_FILE)
    manifest = load_manifest()
    classes = manifest["classes"]  # the second is the positive class, whose probability predictions.csv holds
    title = f"{model}: test set"
    figures.confusion_matrix([r["actual"] for r in predictions], [r["predicted"] for r in predictions], classes,
                           title, CONFUSION_PNG)
    shown_images = gallery_images(manifest, predictions)
    with on_the_second_core(what_it_learned, f"{model} (test accuracy {accuracy:.3f})", manifest, predictions,
                            shown_images):
        figures.misclassified_gallery(predictions, shown_images, classes, title, MISCLASSIFIED_PNG)
        figures.probability_histogram(predictions, classes, title, HISTOGRAM_PNG)
        figures.calibration_curve(predictions, classes, title, CALIBRATION_PNG)
        write_rows(CALIBRATION_FILE, figures.calibration_points(predictions, classes), figures.CALIBRATION_COLUMNS)
    for png in PNGS:
        run.log_artifact(png, artifact_path="plots")
    print(f"wrote {', '.join(map(str, PNGS))} and {CALIBRATION_FILE}")


if __name__ == "__main__":
    entrypoint.run(main)
