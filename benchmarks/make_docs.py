"""Write bench.py's documents of 1M and 10M tokens to a folder (for cli_timing.sh); with --tokenize SIZE, then
tokenize that one three times in this process, as bench.py does: its tokenizer workers import this script, and
with bench.py torch, again."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bench import make_document, tokenize_rate

from longqa.engine import Engine

if __name__ == "__main__":
    out = Path(sys.argv[1])
    engine = Engine(str(Path(__file__).resolve().parent.parent / "weights" / "longqa-armt-small"), "cpu")
    docs = {}
    for name, n in (("1M", 1_000_000), ("10M", 10_000_000)):
        docs[name] = out / f"doc-{name}.txt"
        if not docs[name].exists():
            make_document(docs[name], n, engine)
    if "--tokenize" in sys.argv:
        doc = docs[sys.argv[sys.argv.index("--tokenize") + 1]]
        for i in range(3):
            t = time.perf_counter()
            rate, n = tokenize_rate(engine, doc)
            print(f"pass {i}: {n} tokens {rate / 1e3:.0f}K tok/s {time.perf_counter() - t:.1f} s", flush=True)
