#!/usr/bin/env bash
# Every model in one command: queue one DVC experiment per entry of `models` in params.yaml (named
# bench-<model>), run the queue, and write the leaderboard beside the figures (benchmarks/leaderboard.md and .png).
#   bash benchmarks/compare_models.sh                   every model (inside the activated .venv, at the repo root)
#   bash benchmarks/compare_models.sh cnn mlp           some of them
#   JOBS=2 bash benchmarks/compare_models.sh            two experiments at a time (both cores busy: slower each)
#   EXTRA="-S data.train_fraction=0.1" NAME=small bash benchmarks/compare_models.sh mobilenet_v2_frozen
# A model that fails (ResNet18 without its ImageNet weights offline, say) is listed as failed; the rest still run.
set -euo pipefail
cd "$(dirname "$0")/.."
models=${*:-$(python -c "import yaml; print(' '.join(yaml.safe_load(open('params.yaml'))['models']))")}
prefix="bench-${NAME:+$NAME-}"
for model in $models; do
    dvc exp remove "$prefix$model" >/dev/null 2>&1 || true
    dvc exp run --queue -n "$prefix$model" -S "model=$model" ${EXTRA:-} >/dev/null
done
dvc exp run --run-all -j "${JOBS:-1}" >/dev/null || echo "some experiments failed: dvc queue logs <name> says why" >&2
dvc exp show --no-pager --md --hide-workspace --sort-by metrics/test.json:accuracy --sort-order desc \
    --keep '^(Experiment|model|accuracy|brightness_mae|pointing_game|attribution_in_box|box_area_share|best_val_accuracy|best_epoch|train_seconds)$' --drop '.*' \
    | grep -E "^\|(-| Experiment)|$prefix" || true
catdog leaderboard --match "^$prefix($(echo $models | tr ' ' '|'))\$" --out benchmarks
