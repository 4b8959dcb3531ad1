#!/usr/bin/env bash
# One training call on a lent GPU machine (device tool): resume from runs/NAME if it is there (carried or
# left by the previous call on a warm machine), train for MINUTES, then pack the checkpoint into $OUT so it
# comes back (every file <= 16 MiB, at most 8 files). Usage: training/device_train.sh CONFIG MINUTES [EVAL_LENGTHS]
set -euo pipefail
config=$1 minutes=$2 eval_lengths=${3:-}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # KINDS.md: never multicast
run=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['out'])" "$config")
ngpu=$(python3 -c "import torch; print(torch.cuda.device_count())")
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1
echo "gpus=$ngpu run=$run resume=$([ -f "$run/trainer.json" ] && echo yes || echo no)"
# A failed run (out of memory, say) still sends back its log and last saved checkpoint: no `set -e` exit here.
status=0
torchrun --standalone --nproc_per_node="$ngpu" -m longqa train "$config" --max-minutes "$minutes" || status=$?
if [ -n "$eval_lengths" ] && [ "$status" = 0 ]; then
  python3 -m longqa export "$run" /tmp/export
  python3 -m longqa eval -m /tmp/export --lengths "$eval_lengths" -n 100 --batch 100 \
    --noise .data/carry/noise/fortunes.txt.xz --noise .data/carry/noise/perldoc.txt.xz \
    --json "$run/eval.json" --plot "$OUT/eval.png" || true
fi
cp "$run"/*.safetensors "$run/train.png" "$OUT/" 2>/dev/null || true
tar -C "$run" -cf "$OUT/meta.tar" $(cd "$run" && ls *.json *.jsonl 2>/dev/null)
ls -la "$OUT"
exit "$status"
