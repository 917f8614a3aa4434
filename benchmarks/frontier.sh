#!/usr/bin/env bash
# The fast recipes' accuracy-cost front (issue 35), measured on this machine:
#
#   bash benchmarks/frontier.sh DATA [TRIALS]      e.g.  bash benchmarks/frontier.sh ../shared/datasets/cifar10-jpeg 60
#
# A multi-objective study (`cifarlab tune --frontier`: validation accuracy up, the run's FLOPs down) over
# benchmarks/frontier/space.toml, its trials recorded in benchmarks/frontier/journal.log, which is committed (that
# path alone) every few minutes and at the end: the journal is the study, and a later session on another machine
# continues it from there with the same command (a trial that was running when a session ended is retried).
# Once the study holds TRIALS finished trials, its Pareto front is re-run over 3 seeds with the test split
# (runs/frontier/reruns, resumable), and front.json and report.html are copied next to the journal. Each finished
# re-run's record (config.json, history.csv, metrics.json, and the command seconds in seconds.json) is committed to
# benchmarks/frontier/reruns every few minutes, and copied back into runs/ when a later session starts on a fresh
# machine, so the re-runs too carry over sessions: only the run in flight starts again.
# Run it alone on the machine: the seconds it records are the front's time axis.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/commit.sh
data=${1:?usage: bash benchmarks/frontier.sh DATA [TRIALS]}
trials=${2:-60}
record=benchmarks/frontier
journal=$record/journal.log
reruns=runs/frontier/reruns kept=$record/reruns
study=(--preset fast94 --frontier --space "$record/space.toml" --storage "journal:$journal" --study-dir runs/frontier
       --data "$data" --quiet)

commit() {
    commit_paths "benchmarks: frontier study, $(date -u +%H:%M)" "$@"
}

keep_reruns() {  # the finished re-runs' records into the repo (the model files stay in runs/)
    [[ -d $reruns ]] || return 0
    for run in "$reruns"/*/; do
        run=${run%/}
        [[ -f $run/metrics.json && ! -f $kept/$(basename "$run")/metrics.json ]] || continue
        mkdir -p "$kept/$(basename "$run")"
        cp "$run/config.json" "$run/history.csv" "$run/metrics.json" "$kept/$(basename "$run")/"
    done
    [[ -f $reruns/seconds.json ]] && mkdir -p "$kept" && cp "$reruns/seconds.json" "$kept/"
    [[ -d $kept ]] && commit "$kept"
    return 0
}
if [[ -d $kept ]]; then  # a fresh machine: the re-runs finished in earlier sessions are read, not trained again
    for run in "$kept"/*/; do
        run=${run%/}
        [[ -e $reruns/$(basename "$run") ]] || { mkdir -p "$reruns" && cp -r "$run" "$reruns/"; }
    done
    [[ -f $reruns/seconds.json || ! -f $kept/seconds.json ]] || cp "$kept/seconds.json" "$reruns/"
fi

# the finished trials; a trial still marked running was cut off with an earlier session (this script is the study's
# only worker): it is failed and queued again, and resumes its run where this machine still has it
finished=$(python - "$journal" <<'PY'
import sys, optuna
from optuna.storages.journal import JournalFileBackend
from optuna.storages import JournalStorage
from optuna.trial import TrialState
from cifarlab.tuning.storage import retry_trial
optuna.logging.set_verbosity(optuna.logging.ERROR)
try:
    study = optuna.load_study(study_name="fast94", storage=JournalStorage(JournalFileBackend(sys.argv[1])))
except Exception:
    print(0)
    raise SystemExit
for trial in study.get_trials(states=(TrialState.RUNNING,)):
    study.tell(trial.number, state=TrialState.FAIL)
    retry_trial(study, trial)
print(sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials))
PY
)
if (( finished < trials )); then
    cifarlab tune "${study[@]}" --trials $((trials - finished)) --top-k 0 &
    pid=$!
    while kill -0 $pid 2>/dev/null; do
        sleep 300
        [[ -f $journal ]] && commit "$journal"
    done
    wait $pid
    commit "$journal"
fi
cifarlab tune "${study[@]}" --trials 0 --rerun-seeds 3 &
pid=$!
while kill -0 $pid 2>/dev/null; do
    sleep 300
    keep_reruns
done
wait $pid
keep_reruns
cp runs/frontier/front.json runs/frontier/report.html "$record/"
commit "$journal" "$record/front.json" "$record/report.html"
