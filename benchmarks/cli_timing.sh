#!/usr/bin/env bash
# Wall time of the `longqa` command itself, fresh process each (what bench.py, in-process, leaves out):
# imports, the 12K example, 1M and 10M-token documents with and without tokenizer workers, and --compile.
# Run from the repository root on the GPU machine: bash benchmarks/cli_timing.sh
export PYTHONUNBUFFERED=1 PYTHONPATH=.
TIMEFORMAT='%R s'
F='batching rule|return (func|target|node)|UserWarn|warnings.warn|^\s*$'
for i in 1 2; do
  echo -n "import longqa.engine: "; { time python3 -c "import longqa.engine"; } 2>&1
  echo -n "ask example (CLI): "; { time python3 -m longqa ask -q examples/haystack.txt "Where is Mary?"; } 2>&1 | tr '\n' ' '; echo
  echo -n "refusing a missing file (CLI): "; { time python3 -m longqa ask /nonexistent.txt "Where is Mary?" 2>/dev/null; } 2>&1
done
python3 benchmarks/make_docs.py /tmp
for d in 1M 10M; do
  for w in "" 0; do
    echo -n "ask $d workers=${w:-default}: "; { time LONGQA_TOKENIZER_WORKERS=$w python3 -m longqa ask /tmp/doc-$d.txt "Where is Mary?" 2>&1 | grep -E "read:" | tr '\n' ' '; } 2>&1
  done
done
for i in 1 2; do
  echo -n "ask 10M --compile (run $i): "; { time python3 -m longqa ask --compile /tmp/doc-10M.txt "Where is Mary?" 2>&1 | grep -v -E "$F" | grep "read:" | tr '\n' ' '; } 2>&1
done
echo "tokenize alone, 10M, three passes in one process whose main script imports torch:"
timeout 200 python3 benchmarks/make_docs.py /tmp --tokenize 10M 2>&1 | grep pass
