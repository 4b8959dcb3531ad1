#!/usr/bin/env bash
# Rebuild the shipped model (weights/longqa-armt-small) from an empty clone: the noise, then its five recipes in
# order, each starting from the previous one's export. About an hour of one H100 (docs/training.md); each
# `longqa train` resumes where it stopped, so the script can be run again after an interruption.
# Usage: training/rebuild_shipped.sh [OUT_DIR]      (the rebuilt model directory; default .data/models/rebuilt)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.data/models/rebuilt}
if [ ! -d .data/carry/noise ]; then
  python3 -m longqa.lab.generate.noise .data/noise
  mkdir -p .data/carry/noise
  for f in .data/noise/*.txt; do xz -T0 -9 -c "$f" >".data/carry/noise/$(basename "$f").xz"; done
fi
train() { torchrun --standalone --nproc_per_node="${NGPU:-1}" -m longqa train "training/$1.json" --max-minutes 600; }
train armt-v4 && python3 -m longqa export runs/armt-v4 .data/models/armt-v4
train armt-v4-fw && python3 -m longqa export runs/armt-v4-fw .data/models/armt-v4-fw
train armt-v4-qa4c2 && python3 -m longqa export runs/armt-v4-qa4c2 .data/models/armt-v4-qa4c2
train armt-v5-c9-base && python3 -m longqa export runs/armt-v5-c9-base .data/models/armt-v5-c9-base
train armt-v5-c9tail && python3 -m longqa export runs/armt-v5-c9tail "$out"
echo "rebuilt: $out (compare: longqa eval -m $out --lengths 4K,16K -n 200 --json ...; training/paired.py)"
