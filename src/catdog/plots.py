"""The figures: the seeds' training curves and a confusion matrix, as PNGs a person reads at a glance."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from catdog.io import atomic_path  # noqa: E402


def _save(fig, path: Path) -> None:
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
    _save(fig, path)


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
    _save(fig, path)
