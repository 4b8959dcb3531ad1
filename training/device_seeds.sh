#!/usr/bin/env bash
# A run's first leg as several seeds side by side on a lent GPU machine (seed i on GPU i mod the GPU count), for
# MINUTES each; the seed with the best last validation mean goes on as the run. Its weights and moments come back
# as device_train.sh sends them, every seed's trainer.json and log.jsonl in seeds.tar.
# Usage: training/device_seeds.sh CONFIG MINUTES SEED...      (then, here: training/take_back.sh)
set -uo pipefail
config=$1 minutes=$2
shift 2
. "$(dirname "$0")/device_lib.sh"
run=$(run_of "$config")
ngpu=$(python3 -c "import torch; print(torch.cuda.device_count())")
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1
i=0
for seed in "$@"; do
  CUDA_VISIBLE_DEVICES=$((i % ngpu)) python3 -m longqa train "$config" --seed "$seed" --out "runs/seed-$seed" --workers 5 \
    --max-minutes "$minutes" >"runs-seed-$seed.log" 2>&1 &
  i=$((i + 1))
done
wait
mkdir -p seeds && for seed in "$@"; do  # a seed that failed still sends back its log
  tail -n 3 "runs-seed-$seed.log"
  cp "runs-seed-$seed.log" seeds/
  cp "runs/seed-$seed/trainer.json" "seeds/trainer-$seed.json" 2>/dev/null
  cp "runs/seed-$seed/log.jsonl" "seeds/log-$seed.jsonl" 2>/dev/null
done
best=$(python3 - "$@" <<'PY'
import json, sys
def last_mean(seed):
    try:
        v = json.load(open(f"runs/seed-{seed}/trainer.json"))["validations"]
    except OSError:  # the seed failed before its first save
        return -2
    return sum(x for k, x in v[-1].items() if k.startswith("qa")) / 5 if v else -1
scores = {s: last_mean(s) for s in sys.argv[1:]}
print(max(scores, key=scores.get))
print(scores, file=sys.stderr)
PY
)
echo "best seed: $best"
rm -rf "$run" && mkdir -p "$(dirname "$run")" && cp -r "runs/seed-$best" "$run"
cp "$run"/*.safetensors "$OUT/"
tar -C "$run" -cf "$OUT/meta.tar" $(cd "$run" && ls *.json *.jsonl 2>/dev/null)
tar -cf "$OUT/seeds.tar" seeds
ls -la "$OUT"
