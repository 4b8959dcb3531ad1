#!/usr/bin/env bash
# One leg of a run on a lent GPU machine (device tool), on all its GPUs: resume from the run folder that
# travelled with the tree (training/runs/NAME, the config's "out"), train for MINUTES, score the leg with
# `longqa eval` at EVAL_LENGTHS on held-out noise (n = 200), and put what must come back into $OUT: the weights
# and Adam's moments (files <= 16 MiB) and meta.tar (trainer.json, log.jsonl, eval.json). Even a failed run
# (out of memory, say) sends back its log and last saved checkpoint. A warm machine keeps a copy of the run in
# .data/live (ignored, so the next call's tree leaves it): a call made within the 30 s that the machine stays
# warm resumes from whichever of the two is further on, with no take_back in between.
# Usage: training/device_train.sh CONFIG MINUTES [EVAL_LENGTHS]      (then, here: training/take_back.sh)
set -uo pipefail
config=$1 minutes=$2 eval_lengths=${3:-}
. "$(dirname "$0")/device_lib.sh"
run=$(run_of "$config")
ngpu=$(python3 -c "import torch; print(torch.cuda.device_count())")
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1
step_of() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['step'])" "$1" 2>/dev/null || echo -1; }
live=.data/live/$run
if [ "$(step_of "$live/trainer.json")" -gt "$(step_of "$run/trainer.json")" ]; then
  echo "resuming from the warm machine's copy (step $(step_of "$live/trainer.json"); the tree's is $(step_of "$run/trainer.json"))"
  rm -rf "$run" && mkdir -p "$run" && cp "$live"/* "$run/"
fi
echo "gpus=$ngpu run=$run resume=$([ -f "$run/trainer.json" ] && echo yes || echo no)"
status=0
torchrun --standalone --nproc_per_node="$ngpu" -m longqa train "$config" --max-minutes "$minutes" || status=$?
if [ -n "$eval_lengths" ] && [ "$status" = 0 ]; then
  python3 -m longqa export "$run" /tmp/export
  heldout_eval /tmp/export "$eval_lengths" 200 200 "$run/eval.json" || status=$?
fi
rm -rf "$live" && mkdir -p "$live" && cp "$run"/* "$live/"
cp "$run"/*.safetensors "$OUT/"
tar -C "$run" -cf "$OUT/meta.tar" $(cd "$run" && ls *.json *.jsonl 2>/dev/null)
ls -la "$OUT"
exit "$status"
