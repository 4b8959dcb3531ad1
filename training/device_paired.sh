#!/usr/bin/env bash
# The shipping test, on a lent GPU machine (device tool): the run's export and the shipped model read the same
# documents (seed 0, the same batch, held-out noise) and training/paired.py counts the documents only one of
# them got right, per length. Both evals' JSON go to $OUT (documents, and QA5's breakdown in the log).
# Usage: training/device_paired.sh CONFIG LENGTHS N [BATCH]    e.g. training/device_paired.sh training/armt-v8.json 16K,128K,1M 100
set -euo pipefail
config=$1 lengths=$2 n=$3 batch=${4:-100}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=.  # longqa is not installed there
out=${OUT:-/tmp/paired}
mkdir -p "$out"
run=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['out'])" "$config")
compile=$(python3 -c "import torch; print('--compile' if torch.cuda.is_available() else '')")
python3 -m longqa export "$run" /tmp/paired-new
for model in weights/longqa-armt-small /tmp/paired-new; do
  name=$([ "$model" = /tmp/paired-new ] && echo new || echo shipped)
  echo "== $name: $model"
  python3 -m longqa eval -m "$model" --lengths "$lengths" -n "$n" --batch "$batch" $compile --seed 0 \
    --noise .data/carry/noise/fortunes.txt.xz --noise .data/carry/noise/perldoc.txt.xz --json "$out/$name.json"
done
python3 training/paired.py "$out/shipped.json" "$out/new.json"
