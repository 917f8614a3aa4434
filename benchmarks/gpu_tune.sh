#!/usr/bin/env bash
# Issue 20's searches in one call of a lent GPU machine, whose time is short: `cifarlab tune` over the seed's
# family from proyecto9 at a 15-epoch proxy (the winner and proyecto9 re-run over seeds 1-3), proyecto4 at the
# same proxy over the same seeds, then a short search of the fast recipes' space from fast88 at its 5 epochs.
# Each step has its own time limit; everything is logged to OUT_DIR/gpu_tune.log, and the studies come back as
# OUT_DIR/studies.tar.gz without weights or resume state.
#
#   bash benchmarks/gpu_tune.sh DATA OUT_DIR [SEED_SEARCH_S] [FAST_SEARCH_S]
#
# DATA is the CIFAR-10 image folder or a .tar.xz of one. The machine's python3 with torch is used, with cifarlab
# from src/; a machine without optuna gets it and what it needs as wheels
# carried in .whl/ and installed to a --target folder on PYTHONPATH before this script runs.
set -uo pipefail
data=${1:?usage: gpu_tune.sh DATA OUT_DIR [SEED_SEARCH_S] [FAST_SEARCH_S]}
out=${2:?usage: gpu_tune.sh DATA OUT_DIR [SEED_SEARCH_S] [FAST_SEARCH_S]}
seed_search=${3:-150}
fast_search=${4:-60}
device=${DEVICE:-cuda}
work=${WORK:-/tmp/gpu-tune}
seed_epochs=${SEED_EPOCHS:-15}  # a dry run on a CPU sets these small, EXTRA (all commands) to e.g.
fast_epochs=${FAST_EPOCHS:-5}   # "--val-size 0.2" and EXTRA_TUNE to "--rerun-seeds 1"
read -r -a extra <<< "${EXTRA:-}"
read -r -a extra_tune <<< "${EXTRA_TUNE:-}"
mkdir -p "$out" "$work"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 CIFARLAB_HOME=$work/home
exec > >(tee -a "$out/gpu_tune.log") 2>&1

source "$(dirname "${BASH_SOURCE[0]}")/gpu_steps.sh"

pack() {  # the studies so far, without weights, resume state or pictures (a lent machine's files come back small)
    (cd "$work" && tar czf "$out/studies.tar.gz.part" --exclude='*.pt' --exclude='*.safetensors' --exclude='*.onnx' \
        --exclude='*.png' --exclude='*/trials/*/report.html' --exclude='*/reruns/*/report.html' \
        $(ls -d proyecto9 proyecto4-15ep fast88 2>/dev/null)) && mv "$out/studies.tar.gz.part" "$out/studies.tar.gz"
}

data=$(data_folder "$data" "$work/data")
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null
python3 -c "import torch, optuna; print('torch', torch.__version__, 'optuna', optuna.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
options=(--data "$data" --device "$device" --quiet "${extra[@]}")
step $((seed_search + 240)) "seed family: tune proyecto9 at $seed_epochs epochs" python3 -m cifarlab tune --preset proyecto9 \
    --epochs "$seed_epochs" --trials 60 --timeout "$seed_search" --top-k 1 --study-dir "$work/proyecto9" \
    "${options[@]}" "${extra_tune[@]}"
pack
for seed in 1 2 3; do
    step 60 "proyecto4 at $seed_epochs epochs, seed $seed" python3 -m cifarlab train --preset proyecto4 --epochs "$seed_epochs" \
        --seed "$seed" --out "$work/proyecto4-15ep/proyecto4-s$seed" "${options[@]}"
done
pack
step $((fast_search + 90)) "fast space: tune fast88 at $fast_epochs epochs" python3 -m cifarlab tune --preset fast88 \
    --epochs "$fast_epochs" --trials 60 --timeout "$fast_search" --top-k 1 --study-dir "$work/fast88" \
    "${options[@]}" "${extra_tune[@]}"
pack
ls -la "$out"
