#!/usr/bin/env bash
# Short from-scratch probes side by side on a lent GPU machine (device tool): config i trains on GPU i mod the
# GPU count (so several share a GPU when there are more probes than GPUs: a small model's step leaves most of
# an H100 idle) for MINUTES, then is evaluated at EVAL_LENGTHS on held-out noise. Logs and evals come back in
# $OUT/probes.tar (one file: the device returns at most 8; no weights: probes answer a question, they are
# not kept). Usage: training/device_probes.sh MINUTES EVAL_LENGTHS CONFIG...
set -euo pipefail
minutes=$1 lengths=$2
shift 2
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
logs=$(mktemp -d)
ngpu=$(python3 -c "import torch; print(torch.cuda.device_count())")
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1
i=0
for config in "$@"; do
  name=$(basename "$config" .json)
  run=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['out'])" "$config")
  (
    export CUDA_VISIBLE_DEVICES=$((i % ngpu))
    trap 'cp "$run/log.jsonl" "$logs/$name.jsonl" 2>/dev/null || true' EXIT  # a diverged probe's log too
    python3 -m longqa train "$config" --max-minutes "$minutes"
    python3 -m longqa export "$run" "/tmp/export-$name"
    python3 -m longqa eval -m "/tmp/export-$name" --lengths "$lengths" -n 200 --batch 200 \
      --noise .data/carry/noise/fortunes.txt.xz --noise .data/carry/noise/perldoc.txt.xz --json "$logs/$name-eval.json"
  ) >"$logs/$name.log" 2>&1 &
  i=$((i + 1))
done
wait
tail -n 12 "$logs"/*.log
tar -C "$logs" -cf "$OUT/probes.tar" .
