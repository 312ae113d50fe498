"""Where each stage reads and writes, relative to the repository root; dvc.yaml declares the same paths."""

from pathlib import Path

PARAMS_CHECKED = Path("data/params.ok")        # check: the other stages depend on it, so it runs first
SYNTHETIC_DIR = Path("data/synthetic")         # generate
PREPARED_DIR = Path("data/prepared")           # prepare
DATA_REPORT = Path("metrics/data_report.json") # prepare: images used, skipped (with reasons), duplicates
MODEL_FILE = Path("models/model.pt")           # train: best-on-validation checkpoint
RUN_FILE = Path("models/run.json")             # train: the MLflow run evaluate and plot log into
HISTORY_FILE = Path("plots/history.csv")       # train: per-epoch curves
TRAIN_METRICS = Path("metrics/train.json")     # train
TEST_METRICS = Path("metrics/test.json")       # evaluate
PREDICTIONS_FILE = Path("plots/predictions.csv")  # evaluate: one row per test image (confusion plot data)
CURVES_PNG = Path("plots/training_curves.png")    # plot
CONFUSION_PNG = Path("plots/confusion_matrix.png")  # plot
