#!/usr/bin/env bash
# After a device_train.sh call, here: put what came back (the device tool's files_at folder) into the local
# checkpoint RUN, so that the next call, or a fresh machine, can go on from it. The optimizer shards go to
# RUN-moments/: beside the weights they would not fit the device tool's 64 MiB carry (training/README.md).
# Quick on purpose: a warm machine waits only 30 s for the next call. Usage: training/take_back.sh FILES_AT RUN
set -euo pipefail
from=${1:?usage: take_back.sh FILES_AT RUN} run=${2:?usage: take_back.sh FILES_AT RUN}
if [ ! -f "$from/meta.tar" ] || ! ls "$from"/model-*.safetensors >/dev/null 2>&1; then
  echo "take_back: $from has no meta.tar and model shards: not what device_train.sh sends back" >&2
  exit 2
fi
mkdir -p "$run" "$run-moments"
rm -f "$run"/model-*.safetensors  # a checkpoint with fewer shards must not leave stale ones behind
cp "$from"/model-*.safetensors "$run/"
if ls "$from"/optimizer-*.safetensors >/dev/null 2>&1; then
  rm -f "$run-moments"/optimizer-*.safetensors
  cp "$from"/optimizer-*.safetensors "$run-moments/"
fi
for f in train.png eval.png; do [ ! -f "$from/$f" ] || cp -f "$from/$f" "$run/"; done
tar -C "$run" -xf "$from/meta.tar"
python3 -c "import json, sys; print('took back step', json.load(open(sys.argv[1]))['step'])" "$run/trainer.json"
