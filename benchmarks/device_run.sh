#!/usr/bin/env bash
# The GPU session of the device tool: eval of the shipped checkpoint at long lengths, then the benchmark.
# Results land in $OUT (eval-*.json/png, bench.json, logs).
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true PYTHONPATH=.  # longqa is not installed there
noise="--noise .data/carry/noise/fortunes.txt.xz --noise .data/carry/noise/perldoc.txt.xz"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 200 python3 -m longqa eval --lengths 4K,16K -n 200 --batch 200 $noise --json $OUT/eval-short.json --plot $OUT/eval-short.png 2>&1 | tail -12
timeout 300 python3 -m longqa eval --lengths 64K,128K,1M -n 100 --batch 100 $noise --json $OUT/eval-long.json --plot $OUT/eval-long.png 2>&1 | tee $OUT/eval-long.log | tail -14
timeout 240 python3 benchmarks/bench.py --sizes 10K,1M,10M,100M --json $OUT/bench.json 2>&1 | grep -v -E "Writing|Loading" | tee $OUT/bench.log | tail -30
