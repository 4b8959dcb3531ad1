"""Does the tokenizer thread keep the reading thread waiting for the GIL?

`Engine.read_ids` tokenizes in a background thread while the main thread launches one CUDA graph per
segment; `copy_` and `replay` drop the GIL and must take it back. This times that round trip in the main
thread (`time.sleep(0)` drops and re-takes the GIL) while a background thread runs each stage of the
tokenizer's pipeline on a document, and with nothing beside it. Round trips over 1 ms are stalls that a
GPU segment (about 1 ms on an H100) would notice.

    python benchmarks/gil.py [--copies 3] [--gc on|off|frozen] [--switch-interval 0.005]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from longqa.checkpoint import load_model_dir
from longqa.input.reader import Document, read_chunks
from longqa.input.text import SentenceSplitter, encode_stream

ROOT = Path(__file__).resolve().parent.parent


def round_trips(until: threading.Event | None, n: int = 20_000) -> list[float]:
    """Seconds per GIL round trip, until the event is set (or n of them)."""
    out: list[float] = []
    while (until is not None and not until.is_set()) or (until is None and len(out) < n):
        t = time.perf_counter()
        time.sleep(0)
        out.append(time.perf_counter() - t)
    return sorted(out)


def summary(x: list[float]) -> str:
    slow = [s for s in x if s > 1e-3]
    return (f"median {statistics.median(x) * 1e6:.0f} us, max {x[-1] * 1e3:.1f} ms; "
            f"{len(slow)} stalls over 1 ms, {sum(slow):.2f} s of {sum(x):.2f} s ({sum(slow) / sum(x):.0%})")


def beside(work: Callable[[], object]) -> list[float]:
    done = threading.Event()
    worker = threading.Thread(target=lambda: (work(), done.set()))
    worker.start()
    out = round_trips(done)
    worker.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=3, help="document = this many copies of the shipped noise sample")
    ap.add_argument("--gc", choices=["on", "off", "frozen"], default="on",
                    help="the cyclic garbage collector: on, off, or on with everything loaded before reading frozen (as the CLI does)")
    ap.add_argument("--switch-interval", type=float, default=sys.getswitchinterval())
    args = ap.parse_args()
    sys.setswitchinterval(args.switch_interval)
    if args.gc == "off":
        gc.disable()
    model, tokenizer = load_model_dir(ROOT / "weights" / "longqa-armt-small")  # the model stays alive, as in the CLI
    loaded = len(gc.get_objects())
    if args.gc == "frozen":
        gc.freeze()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "doc.txt"
        path.write_text((ROOT / "longqa" / "lab" / "generate" / "data" / "noise-sample.txt").read_text() * args.copies)
        doc = Document(str(path), path.stat().st_size)

        def split() -> None:
            splitter = SentenceSplitter()
            for chunk in read_chunks(doc):
                splitter.feed(chunk)

        def split_encode() -> None:  # encode_batch alone, without turning its results into lists of ids
            splitter = SentenceSplitter()
            for chunk in read_chunks(doc):
                tokenizer.encode_batch([" " + s for s in splitter.feed(chunk)], add_special_tokens=False)

        stages = {
            "read + decode": lambda: sum(1 for _ in read_chunks(doc)),
            "+ split sentences": split,
            "+ encode_batch": split_encode,
            "+ ids (all of token_stream)": lambda: sum(len(x) for x in encode_stream(tokenizer, read_chunks(doc))),
        }
        print(f"switch interval {sys.getswitchinterval() * 1e3:g} ms, gc {args.gc}, {loaded:,} objects tracked after loading, "
              f"{path.stat().st_size / 1e6:.1f} MB of text")
        for name, work in stages.items():
            print(f"beside {name}: {summary(beside(work))}")
    print(f"alone: {summary(round_trips(None))}")


if __name__ == "__main__":
    main()
