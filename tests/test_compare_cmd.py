"""`catdog compare A B`: sides from git revisions, DVC experiments and the workspace, paired on their test
predictions (McNemar's exact test), the JSON, the report, the gate's exit codes and the bad inputs; then end to
end on two DVC experiments, and the pull-request workflow's steps (.ci/pr_report.sh) on a scratch repository of
three commits."""

import json
import subprocess
import sys

import pytest
import yaml
from PIL import Image

from catdog import CatdogError
from catdog.analysis.comparison import Side, compare, resolve
from catdog.analysis.comparison_report import write_report
from catdog.analysis.evidence import Predictions, wilson_interval
from conftest import ROOT, copy_repo, pipeline_env, run, set_params

CATS = [f"cat/cat.{i:05d}.jpg" for i in range(20)]
DOGS = [f"dog/dog.{i:05d}.jpg" for i in range(20)]
FILES = CATS + DOGS
A_WRONG = {3, 7, 11, 25, 26, 30, 33, 36, 38, 39}  # A gets the other 30 of the 40 images right
PARAMS = {"seed": 42, "model": "logistic", "models": {"logistic": {"lr": 0.01, "epochs": 10}}}


def rows(wrong: set[int], files=FILES, classes=("cat", "dog")) -> list[tuple]:
    """(file, actual, predicted, P(dog)) per image: wrong on the indices `wrong`."""
    out = []
    for i, f in enumerate(files):
        actual = classes[i >= len(files) // 2]
        predicted = classes[(i >= len(files) // 2) != (i in wrong)]
        out.append((f, actual, predicted, 0.7 + i / 200 if predicted == classes[1] else 0.3 - i / 200))
    return out


def csv_text(table: list[tuple]) -> str:
    return "file,actual,predicted,probability\n" + "".join(f"{f},{a},{p},{q:.6f}\n" for f, a, p, q in table)


def side(label: str, wrong: set[int], **changes) -> Side:
    table = rows(wrong)
    predictions = Predictions.from_csv(csv_text(table))
    params = {"model": "logistic", "models.logistic.lr": 0.01, **changes.pop("params", {})}
    return Side(label, params, {"accuracy": round(predictions.accuracy, 6), "f1": 0.5, "pointing_game": 0.25},
                {"best_val_accuracy": 0.6, "train_seconds": 3.0}, predictions, **changes)


def git_repo(path):
    path.mkdir()
    run(["git", "init", "-q"], path)
    return path


def commit(repo, table, params=PARAMS, message="run", test=None) -> str:
    """Commit what `dvc repro` leaves in git: params.yaml and the `cache: false` outputs."""
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    if table is not None:
        (repo / "plots").mkdir(exist_ok=True)
        (repo / "metrics").mkdir(exist_ok=True)
        (repo / "plots" / "predictions.csv").write_text(csv_text(table))
        (repo / "plots" / "history.csv").write_text("epoch,train_loss,train_accuracy,val_loss,val_accuracy\n"
                                                   "1,0.7,0.5,0.69,0.55\n2,0.6,0.6,0.65,0.6\n")
        right = sum(a == p for _, a, p, _ in table)
        (repo / "metrics" / "test.json").write_text(json.dumps(test or {"accuracy": right / len(table)}))
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", message], repo)
    return run(["git", "rev-parse", "HEAD"], repo).stdout.strip()


def catdog(args, cwd, check=False) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "catdog", "compare", *args], cwd, check=check)


def test_json_pairs_the_images_and_gives_mcnemar_exact_p():
    a = side("A", A_WRONG)
    b = side("B", (A_WRONG - {3}) | {0, 1, 2, 4, 5, 6, 8, 9, 10})  # 1 image became right, 9 became wrong
    result = compare(a, b).to_json()
    assert result["paired"] is True and result["unpaired_reason"] is None
    assert result["newly_right"] == [CATS[3]]
    assert result["newly_wrong"] == [CATS[i] for i in (0, 1, 2, 4, 5, 6, 8, 9, 10)]
    assert result["p_value"] == pytest.approx(22 / 1024)  # 2 * P(X <= 1), X ~ Binomial(10, 1/2)
    assert result["significant"] is True and result["regression"] is True and result["no_change"] is False
    assert result["a"]["accuracy"] == 0.75 and result["b"]["accuracy"] == 0.55
    # test.json without the interval (older commits): computed from the predictions
    assert result["a"]["accuracy_ci"] == list(wilson_interval(30, 40))
    assert result["b"]["accuracy_ci"] == list(wilson_interval(22, 40))
    assert result["metrics"]["accuracy"] == {"a": 0.75, "b": 0.55, "delta": pytest.approx(-0.2)}
    assert result["metrics"]["pointing_game"]["delta"] == 0
    json.dumps(result)  # plain JSON types only


def test_interval_from_test_json_when_it_has_one():
    a = side("A", A_WRONG)
    a.test.update(accuracy_ci_low=0.6, accuracy_ci_high=0.8)
    assert compare(a, side("B", A_WRONG)).to_json()["a"]["accuracy_ci"] == [0.6, 0.8]


def test_no_change_ignores_train_seconds_but_not_params_metrics_or_predictions():
    a, b = side("A", A_WRONG), side("B", A_WRONG)
    b.train["train_seconds"] = 9.9
    same = compare(a, b)
    assert same.no_change and same.verdict().startswith("no change") and same.to_json()["p_value"] == 1.0
    assert not compare(a, side("B", A_WRONG, params={"models.logistic.lr": 0.1})).no_change
    assert compare(a, side("B", A_WRONG, params={"models.logistic.lr": 0.1})).params_changed == \
        {"models.logistic.lr": (0.01, 0.1)}
    moved = side("B", A_WRONG)
    moved.predictions.probability[0] += 0.01  # same verdicts, another probability
    assert not compare(a, moved).no_change
    other = side("B", A_WRONG)
    other.test["f1"] = 0.6
    assert not compare(a, other).no_change


def test_unpaired_test_sets_give_no_p_value_and_say_why():
    a = side("A", A_WRONG)
    b = side("B", A_WRONG)
    b.predictions = Predictions.from_csv(csv_text(rows(A_WRONG, files=[f.replace(".jpg", ".png") for f in FILES])))
    result = compare(a, b)
    data = result.to_json()
    assert data["paired"] is False and data["p_value"] is None and data["significant"] is False
    assert "test sets differ (40 and 40 images, 0 in common)" in data["unpaired_reason"]
    assert data["newly_right"] == data["newly_wrong"] == [] and not result.regression
    assert any(line.startswith("not paired: their test sets differ") for line in result.summary_lines())


def test_different_class_names_are_one_line():
    a = side("A", A_WRONG)
    b = side("B", A_WRONG)
    b.predictions = Predictions.from_csv(csv_text(rows(A_WRONG, classes=("kitten", "puppy"))))
    with pytest.raises(CatdogError, match=r"different class names \(A: cat, dog; B: kitten, puppy\): compare "
                                          "models trained on the same data"):
        compare(a, b)


def test_the_positive_class_is_the_one_whose_probability_predictions_csv_holds():
    assert side("A", A_WRONG).classes == ["cat", "dog"]
    cat_positive = Predictions.from_csv("file,actual,predicted,probability\na,dog,cat,0.8\nb,cat,cat,0.9\n")
    assert Side("A", {}, {}, {}, cat_positive).classes == ["dog", "cat"]  # data.positive_class: cat
    only_negative = Predictions.from_csv("file,actual,predicted,probability\na,dog,cat,0.2\nb,cat,cat,0.1\n")
    assert Side("A", {}, {}, {}, only_negative).classes == ["cat", "dog"]


def test_report_without_models_or_images_says_why_and_links_its_pngs(tmp_path):
    a = side("A", A_WRONG, history=[{"epoch": 1.0, "val_accuracy": 0.5}, {"epoch": 2.0, "val_accuracy": 0.6}])
    b = side("B", (A_WRONG - {3, 7}) | {0}, history=[{"epoch": 1.0, "val_accuracy": 0.55}])
    report = write_report(compare(a, b), tmp_path / "out", root=tmp_path)  # no data/prepared, no checkpoints
    text = report.read_text()
    assert "no significant difference in accuracy (McNemar p = 1" in text
    assert "**0.750** (0.598–0.858)" in text  # wilson_interval(30, 40), rounded
    assert "## 1 test image became wrong" in text and "## 2 test images became right" in text
    assert f"| `{CATS[0]}` | cat | 0.300 | 0.700 |" in text
    assert "A's heatmaps are unavailable: no checkpoint was given for it" in text
    assert "the images are unavailable: data/prepared is missing: `dvc repro prepare`" in text
    linked = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    links = [part.split(")")[0] for line in text.splitlines() for part in line.split("](")[1:]]
    assert len(linked) == 4 and sorted(links) == sorted(p.name for p in report.parent.glob("*.png"))
    for png in report.parent.glob("*.png"):
        with Image.open(png) as image:
            assert image.format == "PNG" and image.width > 300


def test_revisions_experiments_and_workspace_and_the_gate(tmp_path):
    repo = git_repo(tmp_path / "repo")
    base = commit(repo, rows(A_WRONG))
    worse = commit(repo, rows(A_WRONG | {0, 1, 2, 4, 5, 6, 8, 9, 10, 12}), message="ten more images wrong")
    # An experiment of the first commit, as DVC keeps it: refs/exps/<2>/<38>/<name>
    run(["git", "update-ref", f"refs/exps/{base[:2]}/{base[2:]}/lucky", worse], repo)
    assert resolve("lucky", repo).rev == worse and resolve("lucky", repo).label == f"lucky ({worse[:7]})"
    assert resolve("HEAD~1", repo).rev == base
    # no DVC cache here (a fresh CI clone): the report's heatmaps say why they are missing
    assert resolve("HEAD~1", repo).checkpoint() == \
        (None, f"models/model.pt of {base[:7]} is not in the DVC cache (PathMissingError): `dvc pull` it, or "
               "`dvc repro` at that commit")
    # significantly worse: exit 1, one line, after the summary
    result = catdog(["HEAD~1", "HEAD", "--fail-on-regression"], repo)
    assert result.returncode == 1 and "B is significantly worse than A" in result.stdout
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("catdog: error: regression: B (HEAD (") and "McNemar p = 0.00195" in result.stderr
    # the same the other way round is significantly better: exit 0
    assert catdog([worse, base, "--fail-on-regression"], repo).returncode == 0
    # worse but not significantly (3 images lost, 1 gained): exit 0
    commit(repo, rows((A_WRONG - {3}) | {0, 1, 2}), message="noise")
    result = catdog([base, "HEAD", "--fail-on-regression", "--json"], repo)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["significant"] is False and data["p_value"] == pytest.approx(0.625)
    assert data["newly_wrong"] == CATS[:3] and data["newly_right"] == [CATS[3]]
    # the workspace: the files on disk
    (repo / "plots" / "predictions.csv").write_text(csv_text(rows(A_WRONG)))
    data = json.loads(catdog([base, "workspace", "--json"], repo, check=True).stdout)
    assert data["b"]["label"] == "workspace" and data["newly_wrong"] == data["newly_right"] == []


def test_bad_inputs_are_one_line_naming_the_fix(tmp_path):
    repo = git_repo(tmp_path / "repo")
    commit(repo, None, message="params only: the stages never ran")
    commit(repo, rows(A_WRONG))
    for args, expected in (
            (["no-such-thing", "HEAD"], "'no-such-thing' is neither a git revision nor a DVC experiment of "),
            (["HEAD~1", "HEAD"], "HEAD~1 has no test predictions (plots/predictions.csv): its stages never ran "
                                 "there; check it out, `dvc repro` and commit dvc.lock with the outputs"),
            (["HEAD", "workspace"], None)):
        result = catdog(args, repo)
        if expected is None:
            assert result.returncode == 0, result.stderr
            continue
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"catdog: error: {expected}")
    (repo / "plots" / "predictions.csv").unlink()
    result = catdog(["HEAD", "workspace"], repo)
    assert result.returncode == 1 and "workspace has no test predictions" in result.stderr \
        and "run `dvc repro`" in result.stderr
    (repo / "plots" / "predictions.csv").write_text(csv_text(rows(A_WRONG, classes=("kitten", "puppy"))))
    result = catdog(["HEAD", "workspace"], repo)
    assert result.returncode == 1 and "different class names" in result.stderr


@pytest.mark.slow
def test_two_experiments_end_to_end_with_heatmaps(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    set_params(repo, **{"synthetic.n_images": 200})  # 20 test images
    run(["git", "commit", "-qam", "200 images"], repo)
    run(["dvc", "exp", "run", "-n", "slow-lr"], repo)
    run(["dvc", "exp", "run", "-n", "fast-lr", "-S", "models.logistic.lr=0.1"], repo)
    result = catdog(["slow-lr", "fast-lr", "--json", "--out", "report"], repo, check=True)
    data = json.loads(result.stdout)
    assert data["paired"] and data["a"]["label"].startswith("slow-lr (") and data["b"]["n_test"] == 20
    assert data["params_changed"] == {"models.logistic.lr": [0.01, 0.1]}
    flipped = data["newly_right"] + data["newly_wrong"]
    assert flipped and data["p_value"] is not None
    text = (repo / "report" / "report.md").read_text()
    assert "| `models.logistic.lr` | 0.01 | 0.1 |" in text and "pointing_game" in text
    assert all(f"`{f}`" in text for f in flipped) and "heatmaps are unavailable" not in text
    assert "images are unavailable" not in text


def pr_report(repo, base: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", ".ci/pr_report.sh", base, "report"], cwd=repo, env=pipeline_env(),
                          capture_output=True, text=True)


@pytest.mark.slow
def test_pull_request_report_steps_on_three_commits(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    set_params(repo, **{"synthetic.n_images": 200})
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "1: the pipeline's outputs"], repo)
    first = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()

    # 2: a pull request changes a model param
    set_params(repo, **{"models.logistic.lr": 0.1})
    run(["git", "commit", "-qam", "2: lr 0.1"], repo)
    result = pr_report(repo, first)
    report = (repo / "report" / "report.md").read_text()
    data = json.loads(catdog([first, "workspace", "--json"], repo, check=True).stdout)
    assert result.returncode == (1 if data["regression"] else 0), result.stderr
    assert "| `models.logistic.lr` | 0.01 | 0.1 |" in report and "| f1 |" in report and "B − A" in report
    flipped = data["newly_right"] + data["newly_wrong"]
    assert flipped and all(f"`{f}`" in report for f in flipped) and "heatmaps are unavailable" not in report
    run(["git", "add", "-A", "--", ".", ":!report"], repo)  # what the author commits: dvc.lock and the outputs
    run(["git", "commit", "-qm", "2: outputs"], repo)

    # 3: only a comment of params.yaml changes: nothing re-runs, the report says "no change"
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text("# a comment only\n" + params)
    run(["git", "commit", "-qam", "3: a comment"], repo)
    result = pr_report(repo, "HEAD")
    assert result.returncode == 0, result.stderr
    assert "Running stage" not in result.stdout and "didn't change, skipping" in result.stdout
    assert "**no change: the params, the metrics and every test prediction are identical**" in \
        (repo / "report" / "report.md").read_text()


def test_workflow_runs_the_script_and_posts_the_report():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "pr-report.yml").read_text())
    steps = workflow["jobs"]["report"]["steps"]
    commands = "\n".join(step.get("run", "") for step in steps)
    assert "bash .ci/pr_report.sh" in commands and "cml comment update" in commands
    assert any(step.get("uses", "").startswith("actions/cache@") and step["with"]["path"] == ".dvc/cache"
               for step in steps)
