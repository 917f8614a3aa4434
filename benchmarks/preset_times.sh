#!/usr/bin/env bash
# Whole-command time and test accuracy of presets, one after another, each alone on the machine (issue 35's presets
# from the front are named by the minutes they take on two Zen 4 cores: this measures what they take here):
#
#   bash benchmarks/preset_times.sh DATA PRESET[@SEED]...   e.g.  bash benchmarks/preset_times.sh ../shared/datasets/cifar10-jpeg air32-9ep air32-13ep air48-13ep
#
# Each preset trains into runs/preset-times/<preset>-s<SEED>, timed from outside (`date` before and after the command:
# start-up, loading, training, testing and saving all count). One JSON line per run goes to
# benchmarks/presets/times.jsonl (preset, seed, command seconds, test accuracy, the CPU), committed (that path alone)
# after each run.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/commit.sh
data=${1:?usage: bash benchmarks/preset_times.sh DATA PRESET[@SEED]...}
shift
record=benchmarks/presets/times.jsonl
mkdir -p benchmarks/presets runs/preset-times
for spec in "$@"; do
    preset=${spec%@*}
    seed=0
    [[ $spec == *@* ]] && seed=${spec#*@}
    out=runs/preset-times/$preset-s$seed
    rm -rf "$out"
    started=$(date +%s.%N)
    cifarlab train --preset "$preset" --seed "$seed" --data "$data" --out "$out" --quiet | tee "$out.log"
    ended=$(date +%s.%N)
    python benchmarks/run_record.py "$record" "$out" "$started" "$ended" --preset "$preset"
    commit_paths "benchmarks: $preset (seed $seed) timed whole" "$record"
done
