#!/usr/bin/env bash
# Train entries of `models` in params.yaml with their defaults on the current data, one queued DVC experiment
# each (named bench-<model>), run them one after another, and print model, test accuracy and training time.
#   bash benchmarks/compare_models.sh                   every model (inside the activated .venv, at the repo root)
#   bash benchmarks/compare_models.sh cnn mlp           some of them
#   EXTRA="-S data.train_fraction=0.1" NAME=small bash benchmarks/compare_models.sh mobilenet_v2_frozen
# A model that fails (ResNet18 without its ImageNet weights offline, say) shows as failed; the rest still run.
set -euo pipefail
cd "$(dirname "$0")/.."
models=${*:-$(python -c "import yaml; print(' '.join(yaml.safe_load(open('params.yaml'))['models']))")}
for model in $models; do
    name="bench-${NAME:+$NAME-}$model"
    dvc exp remove "$name" >/dev/null 2>&1 || true
    dvc exp run --queue -n "$name" -S "model=$model" ${EXTRA:-} >/dev/null
done
dvc exp run --run-all -j 1 >/dev/null || echo "some experiments failed: dvc queue logs <name> says why" >&2
dvc exp show --no-pager --md -A --hide-workspace --keep '^(Experiment|model|accuracy|brightness_mae|best_val_accuracy|best_epoch|train_seconds)$' --drop '.*' \
    | grep -E '^\|(-| Experiment)|bench-'
