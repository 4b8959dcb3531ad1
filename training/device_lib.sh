# Sourced by the training scripts that run on a lent GPU machine: what they share.
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=.  # longqa is not installed there
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # KINDS.md: never multicast

run_of() {  # the run folder of a training config (its "out")
  python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['out'])" "$1"
}

heldout_eval() {  # MODEL_DIR LENGTHS N BATCH JSON: `longqa eval` on the noise that training never sees
  local compile
  compile=$(python3 -c "import torch; print('--compile' if torch.cuda.is_available() else '')")
  python3 -m longqa eval -m "$1" --lengths "$2" -n "$3" --batch "$4" $compile --seed 0 \
    --noise .data/carry/noise/fortunes.txt.xz --noise .data/carry/noise/perldoc.txt.xz --json "$5"
}
