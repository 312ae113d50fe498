#!/usr/bin/env bash
# Train every entry of `models` in params.yaml with its defaults on the current data, one queued DVC experiment
# each (named bench-<model>), run them one after another, and print model, test accuracy and training time.
#   bash benchmarks/compare_models.sh          (inside the activated .venv, at the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
models=$(python -c "import yaml; print(' '.join(yaml.safe_load(open('params.yaml'))['models']))")
for model in $models; do
    dvc exp remove "bench-$model" >/dev/null 2>&1 || true
    dvc exp run --queue -n "bench-$model" -S "model=$model" >/dev/null
done
dvc exp run --run-all -j 1 >/dev/null
dvc exp show --no-pager --md --hide-workspace --keep '^(Experiment|model|accuracy|brightness_mae|best_val_accuracy|best_epoch|train_seconds)$' --drop '.*' \
    | grep -E '^\|(-| Experiment)|bench-'
