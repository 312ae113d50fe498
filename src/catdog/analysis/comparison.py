"""What one change did to a model: two sides (a git revision, a DVC experiment, the workspace, or anything else
that has test predictions, such as the registered champion's MLflow run) paired image by image on their test
predictions. `catdog compare` prints it and writes the report (analysis.comparison_report); `catdog register`
can weigh a candidate against the champion with the same `compare`.

Each side is what the pipeline committed for it: params.yaml, metrics/test.json, metrics/train.json and the
`cache: false` outputs plots/predictions.csv and plots/history.csv are in git at every commit and experiment ref,
so reading them costs a `git show`; only the checkpoint (models/model.pt, for the report's heatmaps) comes from
DVC's cache, and only when asked for.
"""

import csv
import io
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from catdog import CatdogError
from catdog.analysis.evidence import (
    ALPHA,
    PairedTest,
    Predictions,
    aligned_correct,
    sign_test,
    unpaired_reason,
    wilson_interval,
)
from catdog.config import POSITIVE_CLASS, ParamsLoader, flat
from catdog.paths import HISTORY_FILE, MODEL_FILE, PREDICTIONS_FILE, TEST_METRICS, TRAIN_METRICS, repo_root

WORKSPACE = "workspace"
PARAMS_FILE = "params.yaml"
NOT_COMPARED = ("train_seconds",)  # differs on every run of the same params: never a change


@dataclass
class Side:
    """One model's results. `model` returns its checkpoint's bytes, or raises CatdogError saying why it cannot
    (called only for the report's heatmaps); None: no checkpoint at all."""
    label: str                                  # how the report names it: "main (9125160)", "workspace"
    params: dict                                # params.yaml, flattened: {"models.cnn.lr": 0.001, ...}
    test: dict                                  # metrics/test.json
    train: dict                                 # metrics/train.json
    predictions: Predictions | None             # plots/predictions.csv
    history: list[dict] = field(default_factory=list)  # plots/history.csv, numbers
    model: Callable[[], bytes] | None = None
    rev: str = ""                               # the commit, "" for the workspace

    @property
    def n_test(self) -> int:
        return len(self.predictions.files) if self.predictions else 0

    @property
    def accuracy(self) -> float:
        return self.test["accuracy"] if "accuracy" in self.test else self.predictions.accuracy

    @property
    def accuracy_ci(self) -> tuple[float, float]:
        """metrics/test.json's interval; computed from the predictions for commits older than it."""
        if "accuracy_ci_low" in self.test and "accuracy_ci_high" in self.test:
            return self.test["accuracy_ci_low"], self.test["accuracy_ci_high"]
        return wilson_interval(int(self.predictions.correct.sum()), self.n_test)

    @property
    def classes(self) -> list[str]:
        """[negative, positive] class names. predictions.csv's probability is the positive class's, so the class
        predicted above 0.5 is it; data.positive_class where no prediction tells (one class predicted throughout)."""
        if not self.predictions:
            return []
        p = self.predictions
        names = sorted(set(p.actual) | set(p.predicted))
        positive = next((c for c, q in zip(p.predicted, p.probability) if q > 0.5), None)
        negative = next((c for c, q in zip(p.predicted, p.probability) if q <= 0.5), None)
        if positive is None:
            positive = next((c for c in names if c != negative), None) if len(names) == 2 else None
        positive = positive or self.params.get("data.positive_class", POSITIVE_CLASS)
        return [c for c in names if c != positive] + [positive]

    def checkpoint(self) -> tuple[bytes | None, str]:
        """(the checkpoint's bytes, "") or (None, why it is unavailable)."""
        if self.model is None:
            return None, "no checkpoint was given for it"
        try:
            return self.model(), ""
        except CatdogError as error:
            return None, str(error)


def side_from_texts(label: str, params: str, test: str | None, train: str | None, predictions: str | None,
                    history: str | None, model: Callable[[], bytes] | None = None, rev: str = "") -> Side:
    """A side from the text of its files (None where one is missing): params.yaml, metrics/test.json,
    metrics/train.json, plots/predictions.csv, plots/history.csv."""
    rows = list(csv.DictReader(io.StringIO(history))) if history else []
    return Side(label, flat(yaml.load(params, Loader=ParamsLoader) or {}), json.loads(test) if test else {},
                json.loads(train) if train else {}, Predictions.from_csv(predictions) if predictions else None,
                [{k: float(v) for k, v in row.items()} for row in rows], model, rev)


def _git(*args: str, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def _experiment_commit(name: str, root: Path) -> str | None:
    """The commit of the DVC experiment `name` of any baseline (refs/exps/<2>/<38>/<name>), that of HEAD's
    baseline where two commits have one of that name; None where there is none."""
    refs = _git("for-each-ref", "--format=%(objectname) %(refname)", "refs/exps", root=root).stdout.split("\n")
    found = {ref: sha for sha, ref in (line.split(" ", 1) for line in refs if line)
             if ref.count("/") == 4 and ref.rsplit("/", 1)[1] == name}
    if len(found) <= 1:
        return next(iter(found.values()), None)
    head = _git("rev-parse", "HEAD", root=root).stdout.strip()
    own = [sha for ref, sha in found.items() if ref.split("/")[2] + ref.split("/")[3] == head]
    if own:
        return own[0]
    raise CatdogError(f"{len(found)} DVC experiments of different commits are named {name!r}: pass the commit of "
                      f"the one you mean instead ({', '.join(sha[:7] for sha in found.values())})")


def _model_at(rev: str, root: Path) -> Callable[[], bytes]:
    def read() -> bytes:
        import dvc.api  # late: a second to import, for the report's heatmaps alone
        from dvc.exceptions import DvcException

        try:
            return dvc.api.read(MODEL_FILE.as_posix(), repo=str(root), rev=rev, mode="rb")
        except (DvcException, OSError, ValueError, KeyError) as error:
            raise CatdogError(f"{MODEL_FILE} of {rev[:7]} is not in the DVC cache ({type(error).__name__}): "
                              "`dvc pull` it, or `dvc repro` at that commit") from None
    return read


def _workspace_model(root: Path) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            return (root / MODEL_FILE).read_bytes()
        except OSError as error:
            raise CatdogError(f"{MODEL_FILE} cannot be read ({error.strerror}): `dvc repro` writes it, "
                              "`dvc checkout` restores it") from None
    return read


def resolve(spec: str, root: Path | None = None) -> Side:
    """The side `spec` names: `workspace` (the files on disk), a DVC experiment's name (of any commit), or a git
    revision (a branch, tag, sha, HEAD~1...). One line naming the fix where it is none of these, or where it has
    no test predictions."""
    root = Path(root or repo_root())
    if spec == WORKSPACE:
        def read(path) -> str | None:
            return (root / path).read_text() if (root / path).is_file() else None
        rev, how = "", "run `dvc repro`"
        label, model = WORKSPACE, _workspace_model(root)
    else:
        rev = _experiment_commit(spec, root)
        how = f"run it again with `dvc exp run -n {spec}`" if rev else None
        if rev is None:
            found = _git("rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}", root=root)
            if found.returncode != 0:
                raise CatdogError(f"{spec!r} is neither a git revision nor a DVC experiment of {root} nor "
                                  f"`{WORKSPACE}`: `git log --oneline` and `dvc exp list -A` list what there is")
            rev, how = found.stdout.strip(), "check it out, `dvc repro` and commit dvc.lock with the outputs"

        def read(path) -> str | None:
            shown = _git("show", f"{rev}:{Path(path).as_posix()}", root=root)
            return shown.stdout if shown.returncode == 0 else None
        label, model = f"{spec} ({rev[:7]})", _model_at(rev, root)
    predictions = read(PREDICTIONS_FILE)
    if not predictions:
        raise CatdogError(f"{spec} has no test predictions ({PREDICTIONS_FILE}): its stages never ran there; {how}")
    return side_from_texts(label, read(PARAMS_FILE) or "", read(TEST_METRICS), read(TRAIN_METRICS), predictions,
                           read(HISTORY_FILE), model, rev)


def _differ(a: dict, b: dict, skip=()) -> dict:
    """{key: (a's value, b's value)} for the keys whose values differ (None where a side lacks the key)."""
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys())
            if k not in skip and a.get(k) != b.get(k)}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Comparison:
    a: Side
    b: Side
    params_changed: dict        # {key: (a, b)}
    metrics: dict               # metrics/test.json: {key: (a, b)} for every key of either side
    train_metrics: dict         # metrics/train.json, the same
    unpaired: str | None        # why the sides cannot be paired; None where they can
    test: PairedTest | None     # McNemar's exact test; None where unpaired
    newly_right: list[str]      # files wrong in A and right in B, in A's order
    newly_wrong: list[str]      # right in A and wrong in B

    @property
    def paired(self) -> bool:
        return self.unpaired is None

    @property
    def significant(self) -> bool:
        return self.test is not None and self.test.significant

    @property
    def regression(self) -> bool:
        """B is significantly worse than A in accuracy on the same images."""
        return self.significant and len(self.newly_wrong) > len(self.newly_right)

    @property
    def no_change(self) -> bool:
        """Params, metrics (train_seconds aside) and every prediction identical."""
        same_metrics = not _differ(self.a.test, self.b.test) and \
            not _differ(self.a.train, self.b.train, NOT_COMPARED)
        return self.paired and not self.params_changed and same_metrics and \
            sorted(_rows(self.a.predictions)) == sorted(_rows(self.b.predictions))

    def verdict(self) -> str:
        if self.no_change:
            return "no change: the params, the metrics and every test prediction are identical"
        if not self.paired:
            return f"not paired: {self.unpaired}; no paired test was made"
        if not self.significant:
            return f"no significant difference in accuracy (McNemar p = {self.test.p_value:.3g} ≥ {ALPHA})"
        better = "better" if len(self.newly_right) > len(self.newly_wrong) else "worse"
        return f"B is significantly {better} than A in accuracy (McNemar p = {self.test.p_value:.3g} < {ALPHA})"

    def summary_lines(self, params: bool = True) -> list[str]:
        """Both accuracies, the params that changed (unless params is False: a side without params.yaml, such as the
        champion's MLflow run), the paired test and the verdict."""
        lines = []
        for name, side in (("A", self.a), ("B", self.b)):
            low, high = side.accuracy_ci
            lines.append(f"{name}: {side.label}: accuracy {side.accuracy:.3f} (95 % CI {low:.3f}–{high:.3f}) "
                         f"on {side.n_test} test images")
        changed = ", ".join(f"{k} {_text(va)} -> {_text(vb)}" for k, (va, vb) in self.params_changed.items())
        if params:
            lines.append(f"params changed: {changed or 'none'}")
        if self.paired:
            lines.append(f"paired on {self.a.n_test} test images: {len(self.newly_right)} newly right, "
                         f"{len(self.newly_wrong)} newly wrong; McNemar exact p = {self.test.p_value:.4g}")
        lines.append(self.verdict())
        return lines

    def to_json(self) -> dict:
        def side(s: Side) -> dict:
            return {"label": s.label, "rev": s.rev, "accuracy": s.accuracy, "accuracy_ci": list(s.accuracy_ci),
                    "n_test": s.n_test, "metrics": s.test}

        return {"a": side(self.a), "b": side(self.b),
                "params_changed": {k: list(v) for k, v in self.params_changed.items()},
                "metrics": {k: {"a": va, "b": vb, "delta": vb - va if _number(va) and _number(vb) else None}
                            for k, (va, vb) in self.metrics.items()},
                "paired": self.paired, "unpaired_reason": self.unpaired,
                "p_value": self.test.p_value if self.test else None, "significant": self.significant,
                "alpha": ALPHA, "regression": self.regression, "no_change": self.no_change,
                "newly_right": self.newly_right, "newly_wrong": self.newly_wrong, "verdict": self.verdict()}


def _rows(predictions: Predictions) -> list[tuple]:
    return list(zip(predictions.files, predictions.actual, predictions.predicted, predictions.probability.tolist()))


def _text(value) -> str:
    return "(none)" if value is None else str(value)


def compare(a: Side, b: Side) -> Comparison:
    """A against B: what changed, and McNemar's exact test on the test images both scored. Sides of different
    class names are an error; sides scored on different images are reported as not paired."""
    if a.predictions and b.predictions and a.classes != b.classes:
        raise CatdogError(f"the two sides have different class names ({a.label}: {', '.join(a.classes)}; "
                          f"{b.label}: {', '.join(b.classes)}): compare models trained on the same data")
    unpaired = unpaired_reason(a.predictions or Predictions.from_csv(""), b.predictions or Predictions.from_csv(""))
    test, newly_right, newly_wrong = None, [], []
    if unpaired is None:
        right_a, right_b = a.predictions.correct, aligned_correct(a.predictions, b.predictions)
        test = sign_test(right_a, right_b)  # one run a side: McNemar's exact test
        files = a.predictions.files
        newly_right = [f for f, ra, rb in zip(files, right_a, right_b) if rb and not ra]
        newly_wrong = [f for f, ra, rb in zip(files, right_a, right_b) if ra and not rb]
    return Comparison(a, b, _differ(a.params, b.params), _both(a.test, b.test), _both(a.train, b.train), unpaired,
                      test, newly_right, newly_wrong)


def _both(a: dict, b: dict) -> dict:
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys())}
