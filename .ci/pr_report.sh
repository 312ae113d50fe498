#!/usr/bin/env bash
# What the pull-request workflow (.github/workflows/pr-report.yml) runs, and what any other CI can run the same
# way (docs/comparing.md):
#   bash .ci/pr_report.sh BASE OUTDIR
# `dvc repro` runs the stages the change touched (unchanged ones are skipped, or restored from DVC's run cache
# when .dvc/cache is cached between CI runs), then `catdog compare BASE workspace` writes OUTDIR/report.md and its
# PNGs. Exit status: catdog compare's --fail-on-regression, 1 when the workspace is significantly worse than BASE
# (McNemar's exact test on the test images); the report is written either way, so CI can post it before failing.
set -euo pipefail
if [[ $# -ne 2 ]]; then
    echo "usage: bash .ci/pr_report.sh BASE OUTDIR   (BASE: the git revision the change is compared with)" >&2
    exit 2
fi
base=$1 out=$2
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1

echo "== dvc repro: the stages the change touched"
dvc repro
echo "== catdog compare $base workspace"
python -m catdog compare "$base" workspace --out "$out" --fail-on-regression
