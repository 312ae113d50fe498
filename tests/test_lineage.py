"""Where a run's data came from: the md5 of data/prepared read from dvc.lock (catdog.data.lineage), the MLflow
dataset inputs and system metrics of a run logged through catdog.tracking.runs, and what `catdog register` tags
and describes a version with. End to end, with `dvc repro` and a DVC remote: tests/test_remote.py."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from catdog import CatdogError
from catdog.analysis.experiments import Experiment
from catdog.data.lineage import prepared_digest
from catdog.tracking.model_registry import lineage_tags, reproduce_description
from conftest import copy_repo, pipeline_env, run

SRC = Path(__file__).resolve().parents[1] / "src"
MD5 = "77d47f6a1d727b1ed53d7ba20c459543.dir"
SYSTEM_DEADLINE = 60  # s for a first system metric to reach the store; MLflow samples every 1 s here


def prepared_folder(root: Path, md5: str = MD5, **changes) -> dict:
    """data/prepared with two files and a dvc.lock whose prepare entry records them as DVC would (count, bytes)."""
    (root / "data/prepared/64").mkdir(parents=True)
    (root / "data/prepared/manifest.json").write_text('{"classes": ["cat", "dog"]}')
    (root / "data/prepared/64/train.npz").write_bytes(b"\0" * 100)
    entry = {"path": "data/prepared", "hash": "md5", "md5": md5, "size": 127, "nfiles": 2, **changes}
    lock = {"schema": "2.0", "stages": {"prepare": {"cmd": "python src/stages/prepare.py", "outs": [entry]}}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    return entry


def test_the_digest_is_dvc_locks_md5_of_data_prepared(tmp_path):
    prepared_folder(tmp_path)
    assert prepared_digest(tmp_path) == MD5
    assert len(MD5) == 36  # MLflow's dataset digest column holds 36 characters


@pytest.mark.parametrize("case, message", [
    ("no lock", "no {lock} here, so no DVC md5 of {prepared} to log"),
    ("no entry", "{lock} records no md5 of {prepared} yet (no `prepare` entry): run `dvc repro prepare`"),
    ("changed", "{prepared} holds 2 files of 127 bytes, not the 3 files of 127 bytes {lock} records: it changed "
                "outside DVC; run `dvc repro prepare`"),
    ("not yaml", "{lock} cannot be read (ParserError): restore it with `git checkout {lock}`"),
])
def test_a_digest_that_cannot_be_read_is_one_line_naming_the_fix(tmp_path, case, message):
    prepared_folder(tmp_path, nfiles=3 if case == "changed" else 2)
    lock = tmp_path / "dvc.lock"
    if case == "no lock":
        lock.unlink()
    elif case == "no entry":
        lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": {"generate": {"outs": []}}}))
    elif case == "not yaml":
        lock.write_text("stages: {prepare: [\n\t")
    with pytest.raises(CatdogError) as error:
        prepared_digest(tmp_path)
    assert str(error.value).startswith(message.format(lock="dvc.lock", prepared="data/prepared"))
    assert "\n" not in str(error.value)


def stage_script(tmp_path, body: str):
    """Run `body` (catdog.tracking.runs imported as `runs`) as a stage would, in tmp_path."""
    code = (f"import sys; sys.path.insert(0, {str(SRC)!r})\n"
            "from catdog import entrypoint\nfrom catdog.tracking import runs\n" + textwrap.dedent(body))
    env = {**pipeline_env(), "DVC_ROOT": str(tmp_path)}
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)


def test_a_training_run_logs_its_data_as_dataset_inputs_and_system_metrics(tmp_path):
    prepared_folder(tmp_path)
    # The run stays open until the store holds a system metric (bounded): a training of a few seconds gets some.
    result = stage_script(tmp_path, f"""
        import json, time
        from mlflow.tracking import MlflowClient
        with runs.training_run("logistic", {{"lr": 0.01}}, images="data/synthetic") as run:
            run.log_metrics({{"val_accuracy": 0.5}}, step=1)
            client = MlflowClient("sqlite:///{tmp_path / 'mlflow.db'}")
            deadline = time.monotonic() + {SYSTEM_DEADLINE}
            run_id = json.load(open("models/run.json"))["run_id"]
            while "system/cpu_utilization_percentage" not in client.get_run(run_id).data.metrics:
                assert time.monotonic() < deadline, "no system metric within {SYSTEM_DEADLINE} s"
                time.sleep(0.2)
        with runs.resumed_run(images="data/synthetic") as run:
            run.log_metrics({{"test_accuracy": 0.75}})
    """)
    assert result.returncode == 0, result.stderr
    assert "system metrics" not in result.stderr  # MLflow's INFO lines stay out of the stage's output
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(json.loads((tmp_path / "models/run.json").read_text())["run_id"])
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert sorted(inputs) == ["data/synthetic:test", "data/synthetic:train", "data/synthetic:val"]
    contexts = {name: {t.key: t.value for t in i.tags}["mlflow.data.context"] for name, i in inputs.items()}
    assert contexts == {"data/synthetic:train": "training", "data/synthetic:val": "validation",
                        "data/synthetic:test": "test"}
    for found in inputs.values():
        assert found.dataset.digest == MD5
        assert json.loads(found.dataset.source) == {"uri": (tmp_path.resolve() / "data/synthetic").as_posix()}
        assert found.dataset.source_type == "local"
    system = [key for key in run.data.metrics if key.startswith("system/")]
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(system)


def test_a_training_run_without_the_data_hash_stops_before_it_opens(tmp_path):
    prepared_folder(tmp_path)
    (tmp_path / "dvc.lock").unlink()
    started = time.monotonic()
    result = stage_script(tmp_path, """
        def main():
            with runs.training_run("logistic", {}, images="data/synthetic"):
                raise AssertionError("the run opened")
        entrypoint.run(main)
    """)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "catdog: error: no dvc.lock here, so no DVC md5 of data/prepared to log as the run's data: run `dvc repro "
        "prepare` (or `dvc commit prepare` to record a data/prepared made outside DVC)")
    assert not (tmp_path / "models/run.json").exists()  # no run was opened
    assert time.monotonic() - started < 120


class _Run:
    """What lineage_tags reads of an MLflow run."""

    def __init__(self, datasets):
        from mlflow.entities import Dataset, DatasetInput, RunInputs

        self.inputs = RunInputs([DatasetInput(Dataset(name, digest, "local", "{}")) for name, digest in datasets])
        self.data = type("Data", (), {"tags": {"git_commit": "c0ffee"}})()
        self.info = type("Info", (), {"run_id": "abc123"})()


def test_a_versions_tags_and_description_say_where_it_came_from_and_how_to_reproduce_it():
    experiment = Experiment(
        "tawny-lynx", "e" * 40, {"model": "cnn", "models.cnn.lr": 0.01, "data.images": "data/synthetic"},
        {"model": "logistic", "models.cnn.lr": 0.001, "data.images": "data/synthetic"},
        test={"accuracy": 0.9, "accuracy_ci_low": 0.85, "accuracy_ci_high": 0.93, "pointing_game": 0.7},
        train={"best_val_accuracy": 0.91}, baseline_rev="b" * 40)
    tags = lineage_tags(experiment, _Run([("data/synthetic:train", MD5), ("data/synthetic:val", MD5)]))
    assert tags["data_digest"] == MD5 and tags["data"] == "data/synthetic"
    assert tags["dvc_exp_name"] == "tawny-lynx" and tags["dvc_exp_rev"] == "e" * 40
    assert tags["git_commit"] == "c0ffee" and tags["dvc_exp_baseline_rev"] == "b" * 40
    assert tags["test_accuracy_95ci"] == "0.9 [0.85, 0.93]" and tags["test_pointing_game"] == "0.7"
    description = reproduce_description(experiment, tags)
    assert "dvc exp pull origin tawny-lynx && dvc exp apply tawny-lynx" in description
    assert f"git checkout {'b' * 40} && dvc pull && dvc exp run -S model=cnn -S models.cnn.lr=0.01" in description
    assert f"data data/synthetic (DVC md5 of data/prepared {MD5}); test accuracy 0.9 [0.85, 0.93], pointing " \
           "game 0.7" in description
    old = lineage_tags(experiment, _Run([]))  # a run logged before catdog logged its data
    assert old["data_digest"] == "not logged" and old["data"] == "data/synthetic"


def test_the_helper_never_imports_torch():
    """The data digest is read in the helper, which must stay light: yaml, not DVC or torch."""
    code = f"import sys; sys.path.insert(0, {str(SRC)!r}); import catdog.tracking.runs; print(sorted(sys.modules))"
    modules = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ}).stdout
    assert "'torch'" not in modules and "'dvc'" not in modules


def lock_md5(text: str) -> str:
    lock = yaml.safe_load(text)
    return next(o["md5"] for o in lock["stages"]["prepare"]["outs"] if o["path"] == "data/prepared")


@pytest.mark.slow
def test_a_queued_experiment_that_prepares_other_data_logs_its_own_digest(tmp_path):
    """A queued experiment runs in DVC's temporary copy, whose dvc.lock gets the new `prepare` entry before `train`:
    its run carries that md5 (the experiment's dvc.lock), not the workspace's, and its source is the user's
    folder, not the copy's, which is gone afterwards."""
    repo = copy_repo(tmp_path / "repo")
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "repro"], repo)
    run(["dvc", "exp", "run", "--queue", "-n", "resplit", "-S", "data.val_fraction=0.2"], repo)
    run(["dvc", "exp", "run", "--run-all"], repo)
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo).stdout.split()
    experiment = lock_md5(run(["git", "show", f"{next(r for r in refs if r.endswith('/resplit'))}:dvc.lock"],
                              repo).stdout)
    workspace = lock_md5((repo / "dvc.lock").read_text())
    assert experiment != workspace  # another split, another data/prepared
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("catdog").experiment_id])}
    for name, digest in (("resplit", experiment), ("logistic", workspace)):  # the queued one, the workspace's
        inputs = runs[name].inputs.dataset_inputs
        assert {i.dataset.digest for i in inputs} == {digest} and len(inputs) == 3, name
        assert {json.loads(i.dataset.source)["uri"] for i in inputs} == {(repo / "data/synthetic").as_posix()}
