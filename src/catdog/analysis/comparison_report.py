"""The report of a comparison (analysis.comparison) as DIR/report.md and the PNGs it links by relative path, so
that it renders on GitHub, in a pull-request comment (CML uploads the PNGs) and in an editor: the verdict, both
accuracies with their intervals, every metric's delta, the params that differ, both sides' validation curves
overlaid, both confusion matrices, and galleries of the test images that flipped, each with both sides'
probabilities and heatmaps.

The pictures are the workspace's prepared test images (data/prepared, as the plot stage's galleries read them),
or decoded from data.images where a file is not among them; the heatmaps are analysis.attribution's maps for the
image's true class (the plot stage's), drawn by attribution_figures.overlay. A side whose checkpoint cannot be
had (a CI clone without DVC's cache) keeps its probabilities and says why its heatmap is missing.
"""

import io
import textwrap
from pathlib import Path

import numpy as np

from catdog import CatdogError
from catdog.analysis import attribution, attribution_figures, figures
from catdog.analysis.comparison import Comparison, Side
from catdog.analysis.evidence import ALPHA
from catdog.analysis.figures import plt, save
from catdog.files import write_text
from catdog.paths import PREPARED_DIR, repo_root

GALLERY = 12  # flipped images drawn each way; the table lists them all
REPORT = "report.md"
PNGS = ("validation_curves.png", "confusion_a.png", "confusion_b.png", "newly_wrong.png", "newly_right.png")


def _images(n: int) -> str:
    return f"{n} test image{'' if n == 1 else 's'}"


def _value(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool) or isinstance(v, int) or not isinstance(v, float):
        return str(v)
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"


def _delta(va, vb) -> str:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (va, vb))
    if not numbers or vb == va:
        return "0" if numbers else ""
    return f"{vb - va:+d}" if isinstance(va, int) and isinstance(vb, int) else f"{vb - va:+.3f}"


def metrics_table(c: Comparison) -> str:
    (low_a, high_a), (low_b, high_b) = c.a.accuracy_ci, c.b.accuracy_ci
    lines = [f"| | A: {c.a.label} | B: {c.b.label} | B − A |", "|---|---|---|---|",
             f"| **accuracy** (95 % Wilson interval) | **{c.a.accuracy:.3f}** ({low_a:.3f}–{high_a:.3f}) "
             f"| **{c.b.accuracy:.3f}** ({low_b:.3f}–{high_b:.3f}) | {_delta(c.a.accuracy, c.b.accuracy)} |"]
    shown = [(k, v) for k, v in c.metrics.items() if k not in ("accuracy", "accuracy_ci_low", "accuracy_ci_high")]
    shown += [(f"train: {k}", v) for k, v in c.train_metrics.items()]
    lines += [f"| {k} | {_value(va)} | {_value(vb)} | {_delta(va, vb)} |" for k, (va, vb) in shown]
    return "\n".join(lines)


def params_table(c: Comparison) -> str:
    if not c.params_changed:
        return "No param differs."

    def shown(v) -> str:
        return "–" if v is None else str(v)  # as params.yaml writes it: 0.01, not the metrics' 0.010

    return "\n".join(["| param | A | B |", "|---|---|---|"]
                     + [f"| `{k}` | {shown(va)} | {shown(vb)} |" for k, (va, vb) in c.params_changed.items()])


def paired_text(c: Comparison) -> str:
    if not c.paired:
        return f"**Not paired**: {c.unpaired}. McNemar's test needs both sides scored on the same test images; " \
               "no p-value is given."
    n, flipped = c.a.n_test, len(c.newly_right) + len(c.newly_wrong)
    return (f"Both sides scored the same {_images(n)}. {len(c.newly_right)} became right and "
            f"{len(c.newly_wrong)} wrong; the other {n - flipped} got the same verdict from both. McNemar's exact "
            f"test on the {flipped} disagreement{'' if flipped == 1 else 's'}: p = {c.test.p_value:.4g}, "
            f"{'significant' if c.significant else 'not significant'} at α = {ALPHA}.")


def _pictures(files: list[str], size: int, root: Path) -> tuple[np.ndarray | None, str]:
    """uint8 (N, 3, size, size) of the test images `files`: from the workspace's prepared test split where it
    holds them all, else decoded from its data.images; (None, why) where neither can."""
    from catdog.data.decode import load_rgb
    from catdog.data.prepared import load_manifest, load_split

    prepared = root / PREPARED_DIR
    try:
        manifest = load_manifest(prepared)
    except OSError:
        return None, f"{PREPARED_DIR} is missing: `dvc repro prepare` (or `dvc pull`) makes it"
    where = {f: i for i, f in enumerate(manifest["splits"]["test"]["files"])}
    if all(f in where for f in files):
        x, _, _ = load_split("test", size, prepared)
        return x[[where[f] for f in files]], ""
    images = root / manifest["images"]
    try:
        return np.stack([load_rgb(images / f, [size])[0][0] for f in files]), ""
    except OSError as error:
        return None, f"the test images are not in {PREPARED_DIR} nor readable in {images} ({error})"


def _heatmaps(side: Side, files: list[str], targets: np.ndarray, root: Path) -> tuple[np.ndarray | None, str]:
    """The side's attribution maps of `files` for their true classes, or (None, why not)."""
    import torch

    from catdog.models.architectures import load_checkpoint

    data, why = side.checkpoint()
    if data is None:
        return None, why
    try:
        checkpoint, model = load_checkpoint(io.BytesIO(data))
    except CatdogError as error:
        return None, str(error)
    cfg = checkpoint["config"]
    x, why = _pictures(files, cfg["input_size"], root)
    if x is None:
        return None, why
    return attribution.attribute(model, cfg, torch.from_numpy(np.ascontiguousarray(x)), targets), ""


def _unavailable(ax, text: str) -> None:
    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(text, 30)), ha="center", va="center", fontsize=7, wrap=True)
    ax.set(xticks=[], yticks=[])


def gallery(c: Comparison, files: list[str], title: str, path: Path, root: Path) -> list[str]:
    """Up to GALLERY flipped images, one line each: the picture with both probabilities, A's heatmap, B's
    heatmap. Returns the notes on what could not be drawn."""
    classes = c.a.classes
    actual = dict(zip(c.a.predictions.files, c.a.predictions.actual))
    p_a = dict(zip(c.a.predictions.files, c.a.predictions.probability))
    p_b = dict(zip(c.b.predictions.files, c.b.predictions.probability))
    said_a = dict(zip(c.a.predictions.files, c.a.predictions.predicted))
    said_b = dict(zip(c.b.predictions.files, c.b.predictions.predicted))
    targets = np.array([classes.index(actual[f]) for f in files])
    shown, why_no_picture = _pictures(files, max(_prepared_sizes(root) or [128]), root)  # the most readable size
    maps = [_heatmaps(side, files, targets, root) for side in (c.a, c.b)]
    fig, axes = plt.subplots(len(files), 3, figsize=(7.2, 2.5 * len(files) + 0.6), squeeze=False,
                             layout="constrained")
    colours = None
    for row, f in enumerate(files):
        picture_ax = axes[row, 0]
        if shown is None:
            _unavailable(picture_ax, f"image unavailable: {why_no_picture}")
        else:
            picture_ax.imshow(np.asarray(shown[row]).transpose(1, 2, 0))
            picture_ax.set(xticks=[], yticks=[])
        picture_ax.set_xlabel(f"{figures.short_name(f)}, true {actual[f]}\nA: {said_a[f]}, B: {said_b[f]}; "
                              f"P({classes[1]}) {p_a[f]:.3f} → {p_b[f]:.3f}", fontsize=8)
        for ax, name, (heat, why) in zip(axes[row, 1:], "AB", maps):
            if heat is None or shown is None:
                _unavailable(ax, f"{name}'s heatmap unavailable: {why or why_no_picture}")
            else:
                colours = attribution_figures.overlay(ax, np.asarray(shown[row]).transpose(1, 2, 0), heat[row])
            if row == 0:
                ax.set_title(f"{name}: {(c.a if name == 'A' else c.b).label}", fontsize=9)
    axes[0, 0].set_title("the image", fontsize=9)
    if colours is not None:
        fig.colorbar(colours, ax=axes, shrink=0.3, label="attribution for the true class (1 = the image's peak)")
    fig.suptitle(title)
    save(fig, path)
    notes = [f"{name}'s heatmaps are unavailable: {why}" for name, (heat, why) in zip("AB", maps) if heat is None]
    return notes + ([f"the images are unavailable: {why_no_picture}"] if shown is None else [])


def _prepared_sizes(root: Path) -> list[int]:
    from catdog.data.prepared import load_manifest

    try:
        return list(load_manifest(root / PREPARED_DIR)["sizes"])
    except OSError:
        return []


def _largest_swing(c: Comparison, files: list[str]) -> list[str]:
    """The files whose probability moved most first (ties in A's order), at most GALLERY of them."""
    p_a = dict(zip(c.a.predictions.files, c.a.predictions.probability))
    p_b = dict(zip(c.b.predictions.files, c.b.predictions.probability))
    return sorted(files, key=lambda f: -round(abs(p_b[f] - p_a[f]), 6))[:GALLERY]


def flipped_table(c: Comparison, files: list[str]) -> str:
    classes = c.a.classes
    actual = dict(zip(c.a.predictions.files, c.a.predictions.actual))
    p_a = dict(zip(c.a.predictions.files, c.a.predictions.probability))
    p_b = dict(zip(c.b.predictions.files, c.b.predictions.probability))
    return "\n".join([f"| file | true | P({classes[1]}) A | P({classes[1]}) B |", "|---|---|---|---|"]
                     + [f"| `{f}` | {actual[f]} | {p_a[f]:.3f} | {p_b[f]:.3f} |" for f in files])


def write_report(c: Comparison, out: Path, root: Path | None = None) -> Path:
    """DIR/report.md and its PNGs; returns the report's path."""
    root = Path(root or repo_root())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in PNGS:  # last run's figures that this one may not draw (no flipped image one way)
        (out / name).unlink(missing_ok=True)
    parts = [f"# catdog compare: A → B\n\n**A**: {c.a.label} · **B**: {c.b.label}\n\n**{c.verdict()}**",
             "## Accuracy and metrics\n\n" + metrics_table(c), "## Params that differ\n\n" + params_table(c),
             "## The paired test\n\n" + paired_text(c)]
    if c.a.history or c.b.history:
        figures.validation_curves([(f"A: {c.a.label} (test {c.a.accuracy:.3f})", c.a.history),
                                   (f"B: {c.b.label} (test {c.b.accuracy:.3f})", c.b.history)],
                                  "Validation accuracy per epoch", out / PNGS[0])
        parts.append(f"## Validation curves\n\n![validation accuracy of A and B]({PNGS[0]})")
    for side, name, png in ((c.a, "A", PNGS[1]), (c.b, "B", PNGS[2])):
        figures.confusion_matrix(list(side.predictions.actual), list(side.predictions.predicted), side.classes,
                                 f"{name}: {side.label}", out / png)
    parts.append(f"## Confusion matrices\n\n![confusion matrix of A]({PNGS[1]}) ![confusion matrix of B]({PNGS[2]})")
    for files, what, png in ((c.newly_wrong, "became wrong (right in A, wrong in B)", PNGS[3]),
                             (c.newly_right, "became right (wrong in A, right in B)", PNGS[4])):
        if not c.paired:
            break
        section = f"## {_images(len(files))} {what}"
        if files:
            shown = _largest_swing(c, files)
            notes = gallery(c, shown, f"{_images(len(files))} {what.split(' (')[0]}"
                            + (f": the {len(shown)} whose probability moved most" if len(shown) < len(files) else ""),
                            out / png, root)
            section += f"\n\n![{what}]({png})\n\n" + "".join(f"- {note}\n" for note in notes)
            section += "\n" + flipped_table(c, files)
        parts.append(section)
    path = out / REPORT
    write_text(path, "\n\n".join(parts) + "\n")
    return path
