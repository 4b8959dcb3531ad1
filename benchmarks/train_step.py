"""Seconds per training step against the batch, through the real trainer, on this machine.

At this model's size a training step is mostly kernel launches: the shipped shape took about 0.1 s per 1-segment step
at 32 examples on an H100, the dmem128 probe 0.117 s at 128 on an H200. So the batch a recipe can afford
is set by where the step time starts to grow, or GPU memory runs out, which this measures. Each cell
trains a fresh model of the config's shape for --steps steps (one stage: that segment count at most, that
batch) in a scratch folder, and reads the step time of the second half of the log, after the data loader
has warmed up (and, with --compile, after the segment step has compiled: TrainConfig.compile, measured
beside the eager step).

    PYTHONPATH=. python3 benchmarks/train_step.py training/armt-v4.json --segments 1,16 --batches 32,128 --compile
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from longqa.lab.train import Stage, TrainConfig, train


def measure(cfg: TrainConfig, max_segments: int, batch: int, compile: bool, steps: int, minutes: float) -> dict:
    """One cell: seconds per step over the second half of its steps (None if it ran out of time or GPU
    memory first), and the peak GPU memory, which sets the largest batch a stage can use."""
    stage = Stage(steps=steps, max_segments=max_segments, dense=0.5, lr=1e-4, batch=batch)
    cell: dict = {"max_segments": max_segments, "batch": batch, "compiled": compile, "sec_per_step": None}
    torch._dynamo.reset()  # each cell compiles its own model; the cells before must not use up the recompile limit
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        run = replace(cfg, out=tmp, stages=[stage], compile=compile, log_every=steps // 2, save_every=10 * steps)
        try:
            train(run, max_minutes=minutes, log=lambda line: None)
        except torch.OutOfMemoryError:
            cell["error"] = "out of GPU memory"
        gc.collect()  # the failed run's tensors go with its frames, before the next cell allocates
        log = Path(tmp) / "log.jsonl"
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    if cuda:
        cell["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.empty_cache()
    if "error" not in cell and len(rows) >= 2:
        cell["sec_per_step"] = rows[1]["sec_per_step"]
    elif "error" not in cell:
        cell["error"] = f"not {steps} steps in {minutes} minutes"
    return cell


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="a training config; its model shape, noise and tokenizer are used")
    ap.add_argument("--segments", default="1,16", help="max segments of the stage, comma-separated")
    ap.add_argument("--batches", default="32,128,512", help="examples per step, comma-separated")
    ap.add_argument("--steps", type=int, default=40, help="steps per cell; the second half is timed")
    ap.add_argument("--minutes", type=float, default=3.0, help="a cell still running after this is cut")
    ap.add_argument("--compile", action="store_true", help="also time each cell with the segment step compiled")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.steps < 2:
        raise SystemExit("--steps must be at least 2: the first half only warms up")
    cfg = TrainConfig.from_json(args.config)
    if cfg.init:
        raise SystemExit("give a config with its own 'model' shape, not one that starts from 'init'")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"{device}; model {cfg.model}")
    print("| max segments | batch | compiled | s per step | examples per s | peak GPU GiB |\n|---|---|---|---|---|---|")
    cells = []
    for segments in map(int, args.segments.split(",")):
        for batch in map(int, args.batches.split(",")):
            for compile in (False, True) if args.compile else (False,):
                cell = measure(cfg, segments, batch, compile, args.steps, args.minutes)
                cells.append(cell)
                sec = cell["sec_per_step"]
                rate = f"{sec:.3f} | {batch / sec:,.0f}" if sec else f"{cell['error']} | –"
                peak = f"{cell['peak_gib']:.1f}" if "peak_gib" in cell else "–"
                print(f"| {segments} | {batch} | {'yes' if compile else 'no'} | {rate} | {peak} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "config": args.config, "cells": cells}, indent=1))


if __name__ == "__main__":
    main()
