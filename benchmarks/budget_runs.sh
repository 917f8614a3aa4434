#!/usr/bin/env bash
# `cifarlab train --budget` against its acceptance (issue 35), each run alone on the machine:
#
#   bash benchmarks/budget_runs.sh DATA [BUDGET...]      e.g.  bash benchmarks/budget_runs.sh ../shared/datasets/cifar10-jpeg 3m 7m 15m
#   bash benchmarks/budget_runs.sh --folder DATA 2m      a 5-class folder of 48 px images made from DATA's test split
#   bash benchmarks/budget_runs.sh DATA 15m@1 15m@2      another seed of the run (default 0): BUDGET@SEED
#
# Each budget trains into runs/budget/<name>-<budget>-s<seed> and its command time is measured around the whole command
# (`date` before and after, so loading, measuring, training, testing and saving all count). One JSON line per run goes
# to benchmarks/budget/runs.jsonl (budget, command seconds, the point chosen, its measured accuracy, the test accuracy,
# the CPU), which is committed (that path alone) after each run.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/commit.sh
folder=0
if [[ ${1:-} == --folder ]]; then folder=1; shift; fi
data=${1:?usage: bash benchmarks/budget_runs.sh [--folder] DATA BUDGET...}
shift
budgets=("${@:-3m 7m 15m}")
record=benchmarks/budget/runs.jsonl
mkdir -p benchmarks/budget runs/budget
name=$(basename "$data")
if ((folder)); then  # another image size and number of classes: 5 of the test split's classes at 48 px (outside the repo)
    made=/tmp/cifarlab-budget-folder
    python - "$data" "$made" <<'PY'
import sys
from pathlib import Path
from PIL import Image
source, out = Path(sys.argv[1]), Path(sys.argv[2])
for split in ("train", "test"):
    for label in sorted(p.name for p in (source / "test").iterdir())[:5]:
        files = sorted((source / "test" / label).glob("*.jpg"))
        chosen = files[:800] if split == "train" else files[800:]
        (out / split / label).mkdir(parents=True, exist_ok=True)
        for f in chosen:
            target = out / split / label / (f.stem + ".png")
            if not target.exists():
                Image.open(f).convert("RGB").resize((48, 48), Image.BICUBIC).save(target)
PY
    data=$made
    name=folder48
fi
for spec in ${budgets[@]}; do
    budget=${spec%@*}
    seed=0
    [[ $spec == *@* ]] && seed=${spec#*@}
    out=runs/budget/$name-$budget-s$seed
    rm -rf "$out"
    started=$(date +%s.%N)
    cifarlab train --budget "$budget" --seed "$seed" --data "$data" --out "$out" --quiet --image-size "$( ((folder)) && echo 48 || echo 32)" \
        | tee "$out.log"
    ended=$(date +%s.%N)
    python benchmarks/run_record.py "$record" "$out" "$started" "$ended" --budget "$budget"
    commit_paths "benchmarks: train --budget $budget on $name" "$record"
done
