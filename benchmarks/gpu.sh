#!/usr/bin/env bash
# The GPU checks in one call, for a lent GPU machine whose time is short: the card, the CUDA tests, the fast
# presets' time to accuracy, then fp32/bf16 and eager/compiled throughput, and, when LADDER names presets, the
# seed's ladder at full length. Each step has its own time limit, so a slow one cannot eat the others' time;
# everything is logged to OUT_DIR/gpu.log.
#
#   bash benchmarks/gpu.sh DATA OUT_DIR [SEEDS] [PRESETS]
#   LADDER=proyecto6,proyecto7,proyecto8,proyecto9 LADDER_LIMIT=420 bash benchmarks/gpu.sh DATA OUT_DIR 0 fast94
#
# The ladder's runs go to OUT_DIR/ladder, without their weights and resume state (so that they come back from a
# lent machine small): `python scripts/ladder_table.py --keep benchmarks/ladder --runs-dir OUT_DIR/ladder` takes
# the finished ones into README's table. A run cut by the limit says so in gpu.log and comes back partial.
#
# DATA is the CIFAR-10 image folder, or a .tar.xz of one (unpacked to /tmp first); the machine's own python3 with
# torch is used, with cifarlab taken from src/ (nothing is installed).
set -uo pipefail
data=${1:?usage: gpu.sh DATA OUT_DIR [SEEDS]}
out=${2:?usage: gpu.sh DATA OUT_DIR [SEEDS]}
seeds=${3:-0,1,2}
presets=${4:-fast94,fast88}
ladder=${LADDER:-}
ladder_limit=${LADDER_LIMIT:-600}
mkdir -p "$out"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 CIFARLAB_HOME=/tmp/cifarlab-home
exec > >(tee -a "$out/gpu.log") 2>&1

source "$(dirname "${BASH_SOURCE[0]}")/gpu_steps.sh"

data=$(data_folder "$data" /tmp/gpu-data)
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
step 180 "CUDA tests" python3 -m pytest -q -p no:cacheprovider -m gpu tests
step 420 "time to accuracy" python3 benchmarks/time_to_accuracy.py --data "$data" --presets "$presets" \
    --seeds "$seeds" --max-load 1000 --out /tmp/tta
cp /tmp/tta/results.jsonl "$out/" 2>/dev/null
step 240 "throughput" python3 benchmarks/speed.py --device cuda --presets fast94 --steps 40 --repeats 3
if [[ -n $ladder ]]; then
    step "$ladder_limit" "ladder $ladder" python3 -m cifarlab ladder --data "$data" --presets "$ladder" \
        --runs-dir /tmp/ladder --device cuda --quiet
    mkdir -p "$out/ladder"
    for run in /tmp/ladder/*/; do
        mkdir -p "$out/ladder/$(basename "$run")"
        cp "$run"/{config.json,history.csv,metrics.json} "$out/ladder/$(basename "$run")/" 2>/dev/null
    done
    cp /tmp/ladder/compare.csv "$out/ladder/" 2>/dev/null
fi
