"""dvc.yaml's code dependencies cannot drift: each stage lists exactly the files of src/ it runs, every module its
script imports directly or through others (imports inside functions too, and the packages that hold them), so
that editing code a stage runs re-runs it and editing any other code does not."""

from pathlib import Path

import grimp
import pytest
import yaml

from conftest import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("catdog", "stages", cache_dir=None)


def code_run_by(graph, stage: str) -> set[str]:
    """The files of src/ that `python src/stages/<stage>.py` imports, with the __init__.py of every package above
    each module (Python runs those first)."""
    files = set()
    for module in {f"stages.{stage}"} | graph.find_upstream_modules(f"stages.{stage}"):
        parts = module.split(".")
        files |= {Path("src", *parts[:i], "__init__.py").as_posix() for i in range(1, len(parts))}
        path = ROOT / "src" / Path(*parts)
        files.add((path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).relative_to(ROOT).as_posix())
    return files - {"src/stages/__init__.py"}  # the script runs as a file, not as a module of the package


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_each_stage_depends_on_exactly_the_code_it_runs(graph, stage):
    assert STAGES[stage]["cmd"] == f"python src/stages/{stage}.py"
    listed = {dep for dep in STAGES[stage]["deps"] if dep.startswith("src/")}
    expected = code_run_by(graph, stage)
    missing, extra = sorted(expected - listed), sorted(listed - expected)
    assert not missing and not extra, (
        f"dvc.yaml's stage {stage} lists code it does not run: {extra}; it runs code it does not list: {missing}. "
        "Its src/ deps should be:\n" + "\n".join(f"      - {f}" for f in sorted(expected)))


def test_export_is_code_no_stage_runs(graph):
    """`catdog export`'s help text, say, can change without re-running any stage."""
    for stage in STAGES:
        assert not any(f.startswith("src/catdog/commands/") for f in code_run_by(graph, stage)), stage


def test_tune_driver_is_code_no_stage_runs(graph):
    """A trial's train stage runs tuning.trial (it reports its epochs); the worker, the search space and the study's
    MLflow run are `catdog tune`'s own: changing them re-runs no stage."""
    for stage in STAGES:
        code = code_run_by(graph, stage)
        assert not {f"src/catdog/tuning/{m}.py" for m in ("worker", "space", "study_run")} & set(code), stage


def test_no_stage_reads_the_tune_settings():
    """`tune` in params.yaml is catdog tune's alone: changing its search space re-runs no stage."""
    for name, stage in STAGES.items():
        assert not [p for p in stage.get("params", []) if str(p).split(".")[0] == "tune"], name
