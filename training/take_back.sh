#!/usr/bin/env bash
# After a device_train.sh or device_seeds.sh call, here: make the run folder what came back (the device tool's
# files_at folder), so that the next call, or the next session (commit it: one checkpoint per run), goes on from
# it. Quick on purpose: a warm machine waits only 30 s for the next call. Usage: training/take_back.sh FILES_AT RUN
set -euo pipefail
from=${1:?usage: take_back.sh FILES_AT RUN} run=${2:?usage: take_back.sh FILES_AT RUN}
if [ ! -f "$from/meta.tar" ] || ! ls "$from"/model-*.safetensors >/dev/null 2>&1; then
  echo "take_back: $from has no meta.tar and model shards: not what device_train.sh sends back" >&2
  exit 2
fi
rm -rf "$run" && mkdir -p "$run"
cp "$from"/model-*.safetensors "$run/"
cp "$from"/optimizer-*.safetensors "$run/" 2>/dev/null || true
tar -C "$run" -xf "$from/meta.tar"
python3 -c "import json, sys; print('took back step', json.load(open(sys.argv[1]))['step'])" "$run/trainer.json"
