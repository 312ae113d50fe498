"""Fail when the committed dvc.lock disagrees with the committed code or params.

Outputs (and the deps produced by earlier stages) are missing on a fresh clone: that is fine. A dependency that
exists but differs from its dvc.lock hash, a changed param or a changed command means someone changed the
pipeline without running `dvc repro` and committing dvc.lock.
"""

import json
import subprocess
import sys

status = [sys.executable, "-m", "dvc", "status", "--json"]
out = subprocess.run(status, capture_output=True, text=True, check=True).stdout
problems = []
for stage, changes in json.loads(out or "{}").items():
    for change in changes:
        if isinstance(change, str):  # "changed command", "always changed"
            problems.append(f"{stage}: {change}")
            continue
        for path, state in change.get("changed deps", {}).items():
            if state != "deleted":
                problems.append(f"{stage}: dep {path} {state}")
if problems:
    print("dvc.lock is stale; run `dvc repro` and commit dvc.lock:\n  " + "\n  ".join(problems))
    sys.exit(1)
print("dvc.lock agrees with the committed code and params")
