"""The batched reading path on a GPU (issue 4's "many 16K-token documents" row), taken apart.

It measures
- the compiled, graphed wavefront step alone, ids already on the GPU, by batch size (1 is a single
  document's `ask`), with the memory's fp32 matrix products run two ways: on CUDA cores, or as TF32 on
  tensor cores (the engine's way; A and z stay fp32 either way); this is the ceiling of a batched read;
- the same step with the flash-attention backend forced, against SDPA's own choice;
- `Engine.read_ids` of many 16K-token documents end to end, as `eval` calls it (ids made before the
  clock), and how long its host producer takes to hand over the first step;
and last the profiler's top kernels of one compiled step (where the step's GPU time goes).

    PYTHONPATH=. python3 benchmarks/batched_step.py --batches 128,256,512 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.bench import ROOT, fmt, model_rate, random_stream, replay_seconds
from longqa.engine import Engine, prefetch
from longqa.input.segments import lockstep
from longqa.wavefront import WavefrontReader, matmul_precision, schedule

DOC_TOKENS = 16_000


def first_step_seconds(engine: Engine, batch: int) -> float:
    """Seconds until the producer of read_ids hands over its first step for `batch` fresh documents."""
    ids = [list(random_stream(engine.config.vocab_size, DOC_TOKENS, seed=i)) for i in range(batch)]
    streams = [engine._segments(engine.new_memory(), x) for x in ids]
    t = time.perf_counter()
    steps = prefetch(schedule(lockstep(streams), batch, engine.config.n_layers, engine.config.pad_token_id))
    next(steps)
    seconds = time.perf_counter() - t
    steps.close()
    return seconds


@torch.inference_mode()
def graph_rate(engine: Engine, batch: int, tf32: bool, steps: int = 30) -> float:
    """Tokens/s of the compiled wavefront step replayed as a CUDA graph, ids already on the device."""
    S = engine.config.segment_len
    ids = torch.randint(3, engine.config.vocab_size, (batch, S + 1), device=engine.device)
    ids[:, -1] = 1  # every row has a segment
    reader = WavefrontReader(engine.model, batch, diagonal=True, compile=True, tf32=tf32)
    reader.capture()
    return batch * S / replay_seconds(reader, ids, steps)


@torch.inference_mode()
def profile_step(engine: Engine, batch: int) -> str:
    """The profiler's top kernels of one compiled wavefront step, run outside a graph."""
    from torch.profiler import ProfilerActivity, profile

    reader = WavefrontReader(engine.model, batch, diagonal=True, compile=True)  # the engine's kind: tf32
    reader.ids[:, : engine.config.segment_len].random_(3, engine.config.vocab_size)
    reader.ids[:, -1] = 1
    with matmul_precision("high"):
        for _ in range(3):
            reader._step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            reader._step()
            torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=20, max_name_column_width=70)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "weights" / "longqa-armt-small"))
    ap.add_argument("--batches", default="128,256,512")
    ap.add_argument("--profile-batch", type=int, default=256)
    ap.add_argument("--json")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    engine = Engine(args.model, "cuda", compile=True)
    torch._dynamo.config.recompile_limit = 64  # one compile per batch size and precision
    res: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "doc_tokens": DOC_TOKENS, "cells": []}
    for batch in batches:
        res.setdefault("first_step_s", {})[batch] = first_step_seconds(engine, batch)
        print(f"producer: first step of {batch} documents after {res['first_step_s'][batch] * 1e3:.1f} ms", flush=True)
    for batch in [1, *batches]:
        for tf32 in (False, True):
            rate = graph_rate(engine, batch, tf32)
            res["cells"].append({"batch": batch, "tf32": tf32, "graph_step": rate})
            print(f"batch {batch}, tf32={tf32}: graphed step {fmt(rate)}", flush=True)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        res["flash_graph_step"] = graph_rate(engine, args.profile_batch, True)
    print(f"batch {args.profile_batch}, tf32, flash attention forced: graphed step {fmt(res['flash_graph_step'])}", flush=True)
    for batch in batches:
        model_rate(engine, batch * DOC_TOKENS, batch)  # the engine's own reader for this batch: compile, capture
        res.setdefault("read_ids", {})[batch] = model_rate(engine, batch * DOC_TOKENS, batch)
        print(f"read_ids of {batch} x 16K documents end to end: {fmt(res['read_ids'][batch])}", flush=True)
    # Last: after the profiler has seen compiled kernels, CUDA graph capture failed in one process (bench.py).
    res["profile"] = profile_step(engine, args.profile_batch)
    print(f"compiled step, batch {args.profile_batch}:\n{res['profile']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
