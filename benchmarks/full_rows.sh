#!/usr/bin/env bash
# The seed's steps at their full length with the test split evaluated after every epoch (issue 32), one after
# another, each record committed the moment its run ends (and the record so far every 10 minutes while it runs):
#
#   bash benchmarks/full_rows.sh DATA PRESET[@SEED]...  e.g.  bash benchmarks/full_rows.sh ../shared/datasets/cifar10-jpeg proyecto9 proyecto8@1
#
# Each step trains every epoch of its preset (--no-early-stop: the callbacks decide nothing, the checkpoint of the best
# val_accuracy is still kept) with --test-each-epoch, at seed SEED (default 0; proyecto8 repeats proyecto7's code and
# runs at seed 1, as the ladder runs it: proyecto8@1) into runs/full/<preset>-s<SEED>; a run directory left by an
# interrupted run is resumed. Its config.json, history.csv and metrics.json are then copied to
# benchmarks/ladder/<preset>-full-s<SEED>/ and committed (those paths only), so that `cifarlab readings` can replay every
# early-stopping reading over it. Run it alone on the machine: the seconds column is the step's pace.
#
# --config FILE trains a variant of each step (the file's settings over the preset, as `train --config`): its run is
# runs/full/<preset>-<file's stem>-s<SEED> and its record <file's folder>/<preset>-<file's stem>-full-s<SEED>, e.g.
#   bash benchmarks/full_rows.sh --config benchmarks/proyecto9/keras29_brightness.toml ../shared/datasets/cifar10-jpeg proyecto9
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/commit.sh
config=()
variant=""
records=benchmarks/ladder
if [[ ${1:-} == --config ]]; then
    [[ -f ${2:-} ]] || { echo "full_rows.sh: --config needs a readable file, got '${2:-}'" >&2; exit 2; }
    config=(--config "$2")
    variant=-$(basename "$2" .toml)
    records=$(dirname "$2")
    shift 2
fi
data=${1:?usage: bash benchmarks/full_rows.sh [--config FILE] DATA PRESET[@SEED]...}
shift

keep() {  # copy the run's record (so far) into git
    local run=$1 record=$2 message=$3
    [[ -f $run/history.csv ]] || return 0
    mkdir -p "$record"
    cp "$run/config.json" "$run/history.csv" "$record/"
    [[ -f $run/metrics.json ]] && cp "$run/metrics.json" "$record/"
    commit_paths "$message" "$record"
}

for step in "$@"; do
    preset=${step%@*}
    seed=0
    [[ $step == *@* ]] && seed=${step#*@}
    run=runs/full/$preset$variant-s$seed
    record=$records/$preset$variant-full-s$seed
    if [[ -f $record/metrics.json ]]; then
        echo "$preset: $record is finished already"
        continue
    fi
    if [[ -f $run/resume.pt ]]; then
        cifarlab train --resume "$run" --quiet &
    elif [[ ! -f $run/metrics.json ]]; then
        cifarlab train --preset "$preset" "${config[@]}" --data "$data" --no-early-stop --test-each-epoch --seed "$seed" \
            --out "$run" --quiet &
    else
        true &
    fi
    # the record so far goes into git every few minutes: a row cut off with its session still answers the readings
    # whose stop it has passed (README's table reads them), and the run itself resumes where this machine keeps it
    train=$!
    while kill -0 "$train" 2>/dev/null; do
        sleep "${FULL_ROWS_EVERY:-600}" &
        sleeper=$!
        wait -n "$train" "$sleeper" || true
        kill "$sleeper" 2>/dev/null || true
        if kill -0 "$train" 2>/dev/null; then
            keep "$run" "$record" "benchmarks: $preset$variant at full length, $(date -u +%H:%M) (seed $seed)"
        fi
    done
    # wait -n has reaped the run already: its status comes from this wait, and a run that failed or was stopped still
    # leaves its record so far in git before the script stops with that status
    status=0
    wait "$train" || status=$?
    ended="with the test split after every epoch"
    (( status == 0 )) || ended="stopped (status $status)"
    keep "$run" "$record" "benchmarks: $preset$variant at full length $ended (seed $seed)"
    (( status == 0 )) || exit "$status"
done
