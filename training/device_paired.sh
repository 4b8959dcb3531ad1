#!/usr/bin/env bash
# The shipping test, on a lent GPU machine (device tool): the run's export and the shipped model read the same
# documents (seed 0, the same batch, held-out noise) and training/paired.py counts the documents only one of
# them got right, per length. Both evals' JSON go to $OUT (documents, and QA5's breakdown in the log).
# Usage: training/device_paired.sh CONFIG LENGTHS N [BATCH]    e.g. training/device_paired.sh training/armt-v8.json 16K,128K,1M 100
set -euo pipefail
config=$1 lengths=$2 n=$3 batch=${4:-100}
. "$(dirname "$0")/device_lib.sh"
out=${OUT:-/tmp/paired}
mkdir -p "$out"
python3 -m longqa export "$(run_of "$config")" /tmp/paired-new
for model in weights/longqa-armt-small /tmp/paired-new; do
  name=$([ "$model" = /tmp/paired-new ] && echo new || echo shipped)
  echo "== $name: $model"
  heldout_eval "$model" "$lengths" "$n" "$batch" "$out/$name.json"
done
python3 training/paired.py "$out/shipped.json" "$out/new.json"
