#!/usr/bin/env bash
# One epoch of the default preset on 400 training images per class of the JPEG copy: a quick end-to-end check.
set -euo pipefail
data=${1:-../shared/datasets/cifar10-jpeg}
out=$(mktemp -d)/smoke
cifarlab train --data "$data" --per-class-limit 400 --val-size 1000 --epochs 1 --out "$out"
cifarlab evaluate "$out" --data "$data" --quiet
