"""The docs' cross-references resolve: every relative Markdown link names a file that exists and, with #anchor, a
heading of it; and every `(FILE, "Section")` reference in the code, params and docs names a section that exists."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
SECTION_REFERENCE = re.compile(r"\((?:see )?(README|[\w./-]+\.md), \"([^\"]+)\"")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
# Links to sections that work in progress is writing, broken until it lands ({doc: link}). The test fails once one
# resolves, so that it is taken off this list. None now.
PENDING: dict[str, str] = {}


def tracked(*patterns: str) -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", *patterns],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    return [ROOT / name for name in listed if name and (ROOT / name).is_file()]


def headings(path: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in FENCE.sub("", path.read_text()).splitlines()
            if re.match(r"#{1,6} ", line)]


def paragraph_leads(path: Path) -> list[str]:
    """The bold words that open a paragraph (**Tuned against the defaults.**): sections too, for a reference."""
    return re.findall(r"^\*\*([^*]+?)\.?\*\*", FENCE.sub("", path.read_text()), re.M)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (not - or _), each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen, out = {}, set()
    for heading in headings(path):
        base = slug(heading)
        out.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return out


def test_slugs_are_githubs():
    assert slug("Every model on the embedded dataset — `benchmarks/compare_models.sh`") == \
        "every-model-on-the-embedded-dataset--benchmarkscompare_modelssh"
    assert slug("Small data, augmentation") == "small-data-augmentation"


@pytest.mark.parametrize("doc", tracked("*.md"), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(doc):
    broken = []
    for match in LINK.finditer(FENCE.sub("", doc.read_text())):
        target = match.group(1) or match.group(2)
        if re.match(r"[a-z]+:", target):  # https:, mailto: ... : not ours to check offline
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with that anchor in {file.relative_to(ROOT)}")
    pending = PENDING.get(doc.relative_to(ROOT).as_posix())
    if pending:
        assert any(b.startswith(f"{pending}: ") for b in broken), f"{pending} resolves now: remove it from PENDING"
        broken = [b for b in broken if not b.startswith(f"{pending}: ")]
    assert not broken, broken


def resolve(reference: str, source: Path) -> Path | None:
    name = "README.md" if reference == "README" else reference
    for folder in (source.parent, ROOT, ROOT / "docs", ROOT / "benchmarks"):
        if (folder / name).is_file():
            return folder / name
    return None


@pytest.mark.parametrize("source", tracked("*.py", "*.md", "*.yaml", "*.sh", "*.toml"),
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_section_reference_names_a_section(source):
    broken = []
    for reference, section in SECTION_REFERENCE.findall(source.read_text()):
        section = " ".join(section.split()).replace("`", "")  # it may wrap, in a comment or a docstring
        file = resolve(reference, source)
        if file is None:
            broken.append(f'({reference}, "{section}"): no such file')
        elif not any(section.lower() in heading.replace("`", "").lower()
                     for heading in headings(file) + paragraph_leads(file)):
            broken.append(f'({reference}, "{section}"): no such section in {file.relative_to(ROOT)}')
    assert not broken, broken


def exp_show_command(path: Path) -> str:
    """The `dvc exp show --only-changed ...` command a doc gives, its continuation line joined."""
    lines = path.read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("dvc exp show --only-changed"))
    return lines[i].rstrip(" \\") + " " + lines[i + 1].strip()


def test_the_exp_show_users_are_told_to_type_leaves_the_data_report_and_other_models_out():
    """What README and docs/experiments.md give is one command; the data report is not a metric, so no column of it
    stands beside test accuracy (docs/experiments.md, "Reading `dvc exp show`": 144 columns for 3 experiments)."""
    readme, experiments = exp_show_command(ROOT / "README.md"), exp_show_command(ROOT / "docs" / "experiments.md")
    assert readme == experiments
    assert "--only-changed" in readme and "--keep 'model$|accuracy$'" in readme
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert "metrics" not in stages["prepare"]
    assert {"metrics/data_report.json": {"cache": False}} in stages["prepare"]["outs"]
