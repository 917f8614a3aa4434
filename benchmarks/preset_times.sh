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
    python - "$out" "$preset" "$seed" "$started" "$ended" "$record" <<'PY'
import json, sys
from pathlib import Path
out, preset, seed, started, ended, record = sys.argv[1:]
config = json.loads((Path(out) / "config.json").read_text())
metrics = json.loads((Path(out) / "metrics.json").read_text())
row = {"preset": preset, "seed": int(seed), "command_seconds": round(float(ended) - float(started), 1),
       "train_seconds": round(metrics["train_seconds"], 1), "epochs_run": metrics["epochs_run"],
       "test_accuracy": metrics["test_accuracy"], "data": config["config"]["data"]["source"],
       "hardware": config.get("hardware")}
with open(record, "a") as f:
    f.write(json.dumps(row) + "\n")
print(json.dumps(row))
PY
    for try in 1 2 3 4 5 6; do
        git add -- "$record" && git commit -q -m "benchmarks: $preset (seed $seed) timed whole" -- "$record" && break
        sleep 10
    done
done
