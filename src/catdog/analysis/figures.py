"""The figures: the seeds' training curves, a confusion matrix and the error analysis (the most confidently
misclassified images, predicted probabilities per class, calibration), as PNGs a person reads at a glance.

The analysis figures read the rows of plots/predictions.csv (file, actual, predicted, probability = P(positive
class)); `classes` lists the class names with the positive one (`dog`) second.
"""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from catdog.analysis.metrics import (  # noqa: E402
    NEAR_THRESHOLD,
    brier_score,
    calibration_bins,
    expected_calibration_error,
    near_threshold_count,
)
from catdog.files import atomic_path  # noqa: E402

GALLERY_SIZE = 12
GALLERY_COLUMNS = 4
NAME_WIDTH = 26  # characters of a file name under a gallery image
CALIBRATION_COLUMNS = ("bin_low", "bin_high", "mean_predicted_probability", "fraction_of_positives", "count")


def save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def training_curves(history: list[dict], title: str, path: Path) -> None:
    """Training loss, training accuracy and validation accuracy per epoch (the seeds' figure), val loss beside."""
    epoch = [int(r["epoch"]) for r in history]
    column = {k: [float(r[k]) for r in history] for k in history[0] if k != "epoch"}
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    marker = "o" if len(epoch) <= 30 else None
    loss_ax.plot(epoch, column["train_loss"], marker=marker, label="training loss")
    loss_ax.plot(epoch, column["val_loss"], marker=marker, linestyle="--", label="validation loss")
    for task in ("class", "brightness"):  # a multi-task model's two losses, beside their weighted sum
        if f"train_{task}_loss" in column:
            loss_ax.plot(epoch, column[f"train_{task}_loss"], linewidth=1, label=f"training {task} loss")
    loss_ax.set(xlabel="epoch", ylabel="binary cross-entropy", title="Loss")
    acc_ax.plot(epoch, column["train_accuracy"], marker=marker, label="training accuracy")
    acc_ax.plot(epoch, column["val_accuracy"], marker=marker, label="validation accuracy")
    acc_ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":", label="chance")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1.02))
    for ax, corner in ((loss_ax, "upper right"), (acc_ax, "lower right")):
        ax.grid(alpha=0.3)
        ax.legend(loc=corner)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    save(fig, path)


def confusion_matrix(actual: list[str], predicted: list[str], classes: list[str], title: str, path: Path) -> None:
    counts = np.array([[sum(a == t and p == q for a, p in zip(actual, predicted)) for q in classes] for t in classes])
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    image = ax.imshow(counts, cmap="Blues")
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=14,
                color="white" if n > counts.max() / 2 else "black")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes, yticklabels=classes,
           xlabel="predicted", ylabel="actual", title=title)
    fig.colorbar(image, ax=ax)
    save(fig, path)


def most_confident_errors(rows: list[dict], n: int = GALLERY_SIZE) -> list[int]:
    """Indices of the (at most) n misclassified rows, those whose probability lies farthest from 0.5 first.

    Ties keep the rows' order, so the same predictions always give the same gallery.
    """
    wrong = [i for i, row in enumerate(rows) if row["actual"] != row["predicted"]]
    # Rounded like predictions.csv, so that 0.7 and 0.3 tie instead of being ordered by a float's last bit.
    return sorted(wrong, key=lambda i: -round(abs(float(rows[i]["probability"]) - 0.5), 6))[:n]


def short_name(file: str, width: int = NAME_WIDTH) -> str:
    """The file's base name, cut in the middle when too long, so that its start and its extension still show."""
    name = Path(file).name
    if len(name) <= width:
        return name
    tail = (width - 1) // 2
    return f"{name[:width - 1 - tail]}…{name[-tail:]}"


def probabilities(rows: list[dict], classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(P(positive class) per row, 1 where the row's true class is the positive one)."""
    return (np.array([float(row["probability"]) for row in rows]),
            np.array([row["actual"] == classes[1] for row in rows], dtype=int))


def calibration_points(rows: list[dict], classes: list[str]) -> list[dict]:
    """The reliability diagram's points (CALIBRATION_COLUMNS), rounded to 6 digits like the metrics."""
    return [{k: round(v, 6) for k, v in b.items()} for b in calibration_bins(*probabilities(rows, classes))]


def misclassified_gallery(rows: list[dict], images, classes: list[str], title: str, path: Path,
                          n: int = GALLERY_SIZE) -> None:
    """The n most confidently wrong test images, each with its file, true and predicted class and P(predicted).

    `images` holds the test images in the rows' order, uint8 (N, 3, S, S); only the shown ones are read, so a
    memory-mapped array costs n images of memory. With no error at all, the figure says so.
    """
    chosen = most_confident_errors(rows, n)
    errors = sum(row["actual"] != row["predicted"] for row in rows)
    if not chosen:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, f"No misclassified image: all {len(rows)} test predictions are correct.",
                ha="center", va="center", fontsize=12)
        ax.axis("off")
        ax.set_title(title)
        save(fig, path)
        return
    columns = min(len(chosen), GALLERY_COLUMNS)
    lines = math.ceil(len(chosen) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(2.3 * columns, 2.8 * lines + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, chosen):
        row, p = rows[i], float(rows[i]["probability"])
        confidence = p if row["predicted"] == classes[1] else 1 - p
        ax.imshow(np.asarray(images[i]).transpose(1, 2, 0))
        ax.set_title(f"{short_name(row['file'])}\ntrue {row['actual']}, predicted {row['predicted']}\n"
                     f"P({row['predicted']}) = {confidence:.3f}", fontsize=9)
    fig.suptitle(f"{title}: the {len(chosen)} most confident of {errors} errors ({len(rows)} images)")
    fig.tight_layout()
    save(fig, path)


def probability_histogram(rows: list[dict], classes: list[str], title: str, path: Path) -> None:
    """P(positive) per true class in 20 bins, with the threshold and the band around it counted on the figure."""
    probability, positive = probabilities(rows, classes)
    low, high = NEAR_THRESHOLD
    near = near_threshold_count(probability)
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    ax.axvspan(low, high, color="gold", alpha=0.3, label=f"near the threshold, [{low}, {high}]: {near} images")
    per_class = [probability[positive == k] for k in (0, 1)]
    ax.hist(per_class, bins=np.linspace(0, 1, 21), color=("tab:blue", "tab:orange"),
            label=[f"true {c}: {len(p)} images, {near_threshold_count(p)} near the threshold"
                   for c, p in zip(classes, per_class)])
    ax.axvline(0.5, color="black", linestyle="--", linewidth=1, label="threshold 0.5")
    ax.set(xlim=(0, 1), xlabel=f"predicted P({classes[1]})", ylabel="test images",
           title=f"{title}\n{near} of {len(probability)} images ({near / len(probability):.0%}) have "
                 f"P({classes[1]}) in [{low}, {high}]")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="y", alpha=0.3)
    # Below the axes: bars may stand anywhere, crowded at 0.5 or at both ends, and a legend would hide some.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=9, frameon=False)
    save(fig, path)


def calibration_curve(rows: list[dict], classes: list[str], title: str, path: Path) -> None:
    """Reliability diagram: per bin of predicted P(positive), the fraction that is positive, and the bin counts."""
    probability, positive = probabilities(rows, classes)
    bins = calibration_bins(probability, positive)
    fig, (curve_ax, count_ax) = plt.subplots(2, 1, figsize=(6.4, 6.8), sharex=True,
                                             gridspec_kw={"height_ratios": [3, 1]})
    curve_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    curve_ax.plot([b["mean_predicted_probability"] for b in bins], [b["fraction_of_positives"] for b in bins],
                  marker="o", label="this model (one point per non-empty bin)")
    curve_ax.set(xlim=(0, 1), ylim=(-0.02, 1.02), ylabel=f"fraction that is {classes[1]}",
                 title=f"{title}\nBrier {brier_score(probability, positive):.3f}, "
                       f"ECE {expected_calibration_error(probability, positive):.3f}")
    curve_ax.grid(alpha=0.3)
    curve_ax.legend(loc="best")
    bars = count_ax.bar([b["bin_low"] for b in bins], [b["count"] for b in bins],
                        width=[b["bin_high"] - b["bin_low"] for b in bins], align="edge", edgecolor="white")
    count_ax.bar_label(bars, fontsize=8)
    count_ax.set(xlabel=f"predicted P({classes[1]}), {len(probability)} test images in bins of 0.1",
                 ylabel="images", ylim=(0, max(b["count"] for b in bins) * 1.3))
    count_ax.yaxis.get_major_locator().set_params(integer=True)
    fig.align_ylabels()
    save(fig, path)


def validation_curves(curves: list[tuple[str, list[dict]]], title: str, path: Path) -> None:
    """Validation accuracy per epoch of several experiments on one axis, labelled in the order given (the
    leaderboard's). A log epoch axis when their lengths differ tenfold, so 10-epoch runs are not squeezed into
    the corner of a 2000-iteration one."""
    lengths = [len(rows) for _, rows in curves if rows]
    fig, ax = plt.subplots(figsize=(10, 5.5))
    colours = plt.get_cmap("tab20" if len(curves) > 10 else "tab10")
    for i, (label, rows) in enumerate(curves):
        if rows:
            ax.plot([r["epoch"] for r in rows], [r["val_accuracy"] for r in rows], color=colours(i % colours.N),
                    marker="o" if len(rows) <= 30 else None, markersize=3, linewidth=1.5, label=label)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":", label="chance")
    log_x = bool(lengths) and max(lengths) >= 10 * min(lengths)
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel="epoch (log scale)" if log_x else "epoch", ylabel="validation accuracy", title=title,
           ylim=(min(0.4, ax.get_ylim()[0]), 1.02))
    ax.grid(alpha=0.3, which="both" if log_x else "major")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9, frameon=False)
    save(fig, path)
