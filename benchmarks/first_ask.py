"""How long the first `ask` of a fresh process takes on a GPU, stage by stage: loading the engine, reading a
~10K-token document, answering; then the same ask again (the one-off costs paid). Each configuration runs in
a fresh process: the engine as it is (it answers with engine.ATTENTION_BACKENDS, not cuDNN's), and with
cuDNN's attention allowed for answering too, which torch picks on an H100 when left to itself.

    PYTHONPATH=. python3 benchmarks/first_ask.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"engine's backends": "-", "with cuDNN attention": "cudnn"}


def one_process(doc: str, config: str) -> dict[str, float]:
    import torch
    from torch.nn.attention import SDPBackend

    from longqa import engine as engine_module
    from longqa.engine import Engine
    from longqa.input.reader import Document

    if config == "cudnn":
        engine_module.ATTENTION_BACKENDS = [*engine_module.ATTENTION_BACKENDS, SDPBackend.CUDNN_ATTENTION]
    out: dict[str, float] = {}
    t = time.perf_counter()
    engine = Engine(ROOT / "weights" / "longqa-armt-small", "cuda")
    torch.cuda.synchronize()
    out["load"] = time.perf_counter() - t
    for run in ("first", "again"):
        mem = engine.new_memory()
        t = time.perf_counter()
        engine.read([mem], [[Document(doc, None)]])
        torch.cuda.synchronize()
        out[f"{run}_read"] = time.perf_counter() - t
        t = time.perf_counter()
        answer = engine.answer([mem], ["Where is Mary?"])[0][0]
        torch.cuda.synchronize()
        out[f"{run}_answer"] = time.perf_counter() - t
    out["answer"] = answer  # type: ignore[assignment]
    return out


def main() -> None:
    if len(sys.argv) == 3:
        print(json.dumps(one_process(sys.argv[1], sys.argv[2])))
        return
    from longqa.input.text import split_sentences

    sample = (ROOT / "longqa" / "lab" / "generate" / "data" / "noise-sample.txt").read_text()
    sentences = split_sentences(sample[:40_000])  # about 10K tokens
    with tempfile.TemporaryDirectory() as tmp:
        doc = Path(tmp) / "doc.txt"
        doc.write_text(" ".join(sentences[: len(sentences) // 2] + ["Mary went to the office."] + sentences[len(sentences) // 2 :]))
        for name, config in CONFIGS.items():
            t = time.perf_counter()
            res = subprocess.run([sys.executable, __file__, str(doc), config], capture_output=True, text=True, cwd=ROOT)
            wall = time.perf_counter() - t
            line = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.stderr[-500:]
            print(f"{name}: process {wall:.2f} s: {line}", flush=True)


if __name__ == "__main__":
    main()
