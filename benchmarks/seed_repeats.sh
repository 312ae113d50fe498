#!/usr/bin/env bash
# Repeats over training seeds (issue 29): logistic, shallow, deep and cnn with the committed defaults, and cnn with
# the settings `catdog tune` found (RESULTS.md, "Tuned against the defaults", rounded as recorded there), each over
# 5 training seeds on the same split, then the leaderboard of all of them (every row paired with the top one).
#   bash benchmarks/seed_repeats.sh              (inside the activated .venv, at the repository root, after dvc repro)
#   SEEDS=3 bash benchmarks/seed_repeats.sh logistic shallow
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${SEEDS:-5}
for model in ${*:-logistic shallow deep cnn cnn-tuned}; do
    if [ "$model" = cnn-tuned ]; then
        /usr/bin/time -f "%e s wall: $model" catdog repeat --seeds "$seeds" --name cnn-tuned -S model=cnn \
            -S models.cnn.lr=0.00126 -S models.cnn.batch_size=16 -S models.cnn.epochs=38 \
            -S "models.cnn.channels=[56,64,128,76]" -S models.cnn.weight_decay=4.2e-06 \
            -S "models.cnn.augment={crop_scale: [0.8, 1.0], hflip: true}"
    else
        /usr/bin/time -f "%e s wall: $model" catdog repeat --seeds "$seeds" -S "model=$model"
    fi
done
catdog leaderboard --match '^(logistic|shallow|deep|cnn|cnn-tuned)-seed' --out reports/seed_repeats
catdog leaderboard --match '^cnn(-tuned)?-seed' --out reports/seed_repeats_cnn   # the tuned cnn against the defaults
