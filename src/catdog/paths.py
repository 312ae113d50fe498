"""Where each stage reads and writes, relative to the repository root; dvc.yaml declares the same paths."""

import os
from pathlib import Path

PARAMS_CHECKED = Path("data/params.ok")        # check: the other stages depend on it, so it runs first
SYNTHETIC_DIR = Path("data/synthetic")         # generate
SYNTHETIC_BOXES = Path("data/synthetic_boxes.csv")  # generate: the animal's box in each image, beside the folder
PREPARED_DIR = Path("data/prepared")           # prepare
DATA_REPORT = Path("metrics/data_report.json")  # prepare: images used, skipped (with reasons), duplicates
MODEL_FILE = Path("models/model.pt")           # train: best-on-validation checkpoint
RUN_FILE = Path("models/run.json")             # train: the MLflow run evaluate and plot log into
HISTORY_FILE = Path("plots/history.csv")       # train: per-epoch curves
TRAIN_METRICS = Path("metrics/train.json")     # train
TEST_METRICS = Path("metrics/test.json")       # evaluate
# evaluate: the first layer and the fixed test images' attribution maps, which plot draws (without torch)
DRAWN_FILE = Path("plots/drawn.npz")
PREDICTIONS_FILE = Path("plots/predictions.csv")  # evaluate: one row per test image (confusion plot data)
CURVES_PNG = Path("plots/training_curves.png")    # plot
CONFUSION_PNG = Path("plots/confusion_matrix.png")  # plot
MISCLASSIFIED_PNG = Path("plots/misclassified.png")  # plot: the most confidently wrong test images
HISTOGRAM_PNG = Path("plots/probability_histogram.png")  # plot: P(dog) per true class, the band near 0.5
CALIBRATION_PNG = Path("plots/calibration.png")  # plot: reliability diagram
CALIBRATION_FILE = Path("plots/calibration.csv")  # plot: its points, one row per non-empty bin (DVC plot data)
LEARNED_PNG = Path("plots/learned.png")        # plot: the first layer's weights as pictures
HEATMAPS_PNG = Path("plots/heatmaps.png")      # plot: where the model looks, on the same test images for every model
OTHER_SIZES = Path(".cache/prepared")          # train, evaluate, plot: input sizes not in data.sizes, on first use
FEATURE_CACHE = Path(".cache/features")        # train: frozen-backbone features, content-addressed (not DVC's)
ONNX_CACHE = Path(".cache/onnx")                # evaluate, predict, train: models exported for ONNX Runtime, by weights


def repo_root() -> Path:
    """The repository the user works in, also for queued experiments, which DVC runs in .dvc/tmp/exps/<tmp>."""
    root = Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()
    parts = root.parts
    for i in range(len(parts) - 2):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root
