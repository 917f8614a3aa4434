#!/usr/bin/env bash
# The seed's steps at their full length with the test split evaluated after every epoch (issue 32), one after
# another, each record committed the moment its run ends:
#
#   bash benchmarks/full_rows.sh DATA PRESET...        e.g.  bash benchmarks/full_rows.sh ../shared/datasets/cifar10-jpeg proyecto9 proyecto5
#
# Each step trains every epoch of its preset (--no-early-stop: the callbacks decide nothing, the checkpoint of the best
# val_accuracy is still kept) with --test-each-epoch, into runs/full/<preset>-s0; a run directory left by an
# interrupted run is resumed. Its config.json, history.csv and metrics.json are then copied to
# benchmarks/ladder/<preset>-full-s0/ and committed (those paths only), so that `cifarlab readings` can replay every
# early-stopping reading over it. Run it alone on the machine: the seconds column is the step's pace.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: bash benchmarks/full_rows.sh DATA PRESET...}
shift
for preset in "$@"; do
    run=runs/full/$preset-s0
    record=benchmarks/ladder/$preset-full-s0
    if [[ -f $record/metrics.json ]]; then
        echo "$preset: $record is finished already"
        continue
    fi
    if [[ -f $run/resume.pt ]]; then
        cifarlab train --resume "$run" --quiet
    elif [[ ! -f $run/metrics.json ]]; then
        cifarlab train --preset "$preset" --data "$data" --no-early-stop --test-each-epoch --seed 0 --out "$run" --quiet
    fi
    mkdir -p "$record"
    cp "$run/config.json" "$run/history.csv" "$run/metrics.json" "$record/"
    for try in 1 2 3 4 5 6; do  # others may be committing in this working tree: wait for git's index lock
        git add "$record" && git commit -q -m "benchmarks: $preset at full length with the test split after every epoch (seed 0)" -- "$record" && break
        sleep 10
    done
done
