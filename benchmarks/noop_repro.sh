#!/usr/bin/env bash
# Benchmark: the wall time of `dvc repro` when every stage is up to date, i.e. what DVC itself costs to find
# that there is nothing to run (parse dvc.yaml, read params, check the hashes of every dependency and output).
#   bash benchmarks/noop_repro.sh              # in this repository, only if `dvc status` says it is up to date
#   bash benchmarks/noop_repro.sh --clone      # in a fresh clone of HEAD (committed files only) in a temp dir,
#                                              #   after a first full `dvc repro` there (~1 minute on 2 idle cores)
#   RUNS=10 bash benchmarks/noop_repro.sh      # runs to time (default 5)
# Use --clone while experiments run in this repository: `dvc repro` here would wait on, or block, their lock.
# Run inside the activated .venv. Prints the machine, `dvc status`, each run's seconds, then min and median.
# It stops if a timed `dvc repro` runs any stage: then it was not a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
python benchmarks/machine.py

if [[ ${1:-} == --clone ]]; then
    repo=$(mktemp -d /tmp/catdog-noop-repro.XXXXXX)
    trap 'rm -rf "$repo"' EXIT
    git clone -q . "$repo"
    cd "$repo"
    unset MLFLOW_TRACKING_URI  # the clone logs to its own store, removed with it
    start=$EPOCHREALTIME
    if ! output=$(dvc repro 2>&1); then echo "$output" >&2; exit 1; fi
    echo "first dvc repro in the fresh clone: $(python -c "print(f'{$EPOCHREALTIME - $start:.1f}')") s"
fi

echo "dvc status in $PWD:"
status=$(dvc status)
echo "$status"
if [[ $status != *"up to date"* ]]; then
    echo "not up to date: run \`dvc repro\` first, or use --clone" >&2
    exit 1
fi

times=()
for ((i = 1; i <= runs; i++)); do
    start=$EPOCHREALTIME
    if ! output=$(dvc repro 2>&1); then echo "$output" >&2; exit 1; fi
    times+=("$(python -c "print($EPOCHREALTIME - $start)")")
    if [[ $output == *"Running stage"* ]]; then
        echo "dvc repro ran a stage, so it was not a no-op:" >&2
        echo "$output" >&2
        exit 1
    fi
done
python - "${times[@]}" <<'EOF'
import statistics, sys
seconds = [float(s) for s in sys.argv[1:]]
print("no-op dvc repro, seconds per run:", ", ".join(f"{s:.2f}" for s in seconds))
print(f"min {min(seconds):.2f} s, median {statistics.median(seconds):.2f} s over {len(seconds)} runs")
EOF
