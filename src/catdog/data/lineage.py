"""Which data a run used: DVC's md5 of data/prepared as dvc.lock records it, the digest of the run's MLflow
dataset inputs, so that a run is matched to a data version with `grep` in any commit's dvc.lock.

dvc.lock is read where the stage runs (the current folder): DVC runs a stage at the root of the repository it
works in, the workspace or a queued experiment's temporary copy, and writes the `prepare` entry of dvc.lock as soon
as that stage has run (or restored it), before `train` starts. The repository root of the user (paths.repo_root) is
not the place: its dvc.lock describes the workspace's data, not an experiment's (`-S data.images=...`). The md5 is
read, not computed: hashing data/prepared again would cost every training its size in reading, and DVC has
hashed it already. What is read is checked against the folder at the cost of a stat per file (DVC's count and
total size of its files), so that a folder changed outside DVC is not logged under a digest that is not its own.
"""

import os
from pathlib import Path

import yaml

from catdog import CatdogError
from catdog.paths import PREPARED_DIR

LOCK_FILE = Path("dvc.lock")
FIX = "run `dvc repro prepare` (or `dvc commit prepare` to record a data/prepared made outside DVC)"


def _lock_entry(lock: Path, prepared: Path) -> dict:
    """The entry of `prepared` (relative to the repository) among the outputs of dvc.lock's stage `prepare`."""
    try:
        text = lock.read_text()
    except FileNotFoundError:
        raise CatdogError(f"no {lock.name} here, so no DVC md5 of {prepared} to log as the run's data: {FIX}") from None
    try:
        stages = (yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}).get("stages") or {}
    except (yaml.YAMLError, AttributeError) as error:
        raise CatdogError(f"{lock.name} cannot be read ({type(error).__name__}): restore it with "
                          f"`git checkout {lock.name}`, then {FIX}") from None
    for out in (stages.get("prepare") or {}).get("outs") or []:
        if out.get("path") == prepared.as_posix() and out.get("md5"):
            return out
    raise CatdogError(f"{lock.name} records no md5 of {prepared} yet (no `prepare` entry): {FIX}")


def _files_and_bytes(folder: Path) -> tuple[int, int]:
    count = size = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            count += 1
            size += os.stat(os.path.join(parent, name)).st_size
    return count, size


def prepared_digest(root: Path = Path(".")) -> str:
    """DVC's md5 of data/prepared as dvc.lock records it in the repository at `root` ("<32 hex>.dir", 36
    characters: what MLflow's dataset digest holds); one line naming the fix if it is not recorded or the folder
    is no longer what it records."""
    lock, prepared = LOCK_FILE, PREPARED_DIR  # as the user reads them: relative to the repository
    entry = _lock_entry(root / lock, prepared)
    count, size = _files_and_bytes(root / prepared)
    if (count, size) != (entry.get("nfiles"), entry.get("size")):
        raise CatdogError(f"{prepared} holds {count} files of {size} bytes, not the {entry.get('nfiles')} files of "
                          f"{entry.get('size')} bytes {lock} records: it changed outside DVC; {FIX}")
    return entry["md5"]
