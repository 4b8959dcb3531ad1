"""Where a training step's time goes, at a run's current stage: the warm-up steps' time (compiling), wall time
per step, time waiting for data, GPU kernel time, and how many operators and kernels the host launches per step.

A step of this small model may be bound by the host (Python, operator dispatch, kernel launches) rather than
the GPU; the GPU-busy share says which. The run's weights are loaded from its folder (nothing is written
back), the batches come from the trainer's own data loader, and each step is `train.train_step`. With
--eager-questions the step is also timed with its question segments eager, as training ran them before it
compiled them (TrainConfig.compile), to see what that saves.

    PYTHONPATH=. python3 benchmarks/train_profile.py training/armt-v8.json --steps 30 --eager-questions
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from longqa.lab.train import LossModule, TrainConfig, load_run_model, stage_loader, start_memory, train_step


def run_steps(loss_mod: LossModule, opt: torch.optim.Optimizer, data, stage, clip: float, n: int,
              device: torch.device) -> float:
    """n training steps; returns the seconds spent waiting for batches."""
    carried, waited = None, 0.0
    model = loss_mod.model
    for _ in range(n):
        t = time.perf_counter()
        b = next(data).to(device)
        waited += time.perf_counter() - t
        start = start_memory(model, stage.carry, carried, b.ids.shape[0], b.ids.device)
        _, carried = train_step(loss_mod, model, opt, b, start, stage.final_weight, clip)
    return waited


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(cfg: TrainConfig, stage_index: int, start_step: int, eager_questions: bool, warmup: int, steps: int,
            profile_steps: int, device: torch.device) -> tuple[dict, str]:
    model = load_run_model(Path(cfg.out)).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")  # fresh moments: only the timing counts
    loss_mod = LossModule(model, cfg.compile)
    if eager_questions:
        loss_mod._compiled_question = loss_mod._question
    stage = cfg.stages[stage_index]
    data = iter(stage_loader(cfg, stage, None, model.config, 0, 1, start_step, device))
    t = time.perf_counter()
    run_steps(loss_mod, opt, data, stage, cfg.clip, warmup, device)  # compiles every graph the stage needs
    sync(device)
    warmup_sec = time.perf_counter() - t
    t = time.perf_counter()
    waited = run_steps(loss_mod, opt, data, stage, cfg.clip, steps, device)
    sync(device)
    wall = (time.perf_counter() - t) / steps
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run_steps(loss_mod, opt, data, stage, cfg.clip, profile_steps, device)
        sync(device)
    events = prof.events()
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    gpu = sum(e.device_time for e in kernels) / 1e6 / profile_steps  # device_time is in microseconds
    cell = {
        "stage": stage_index, "batch": cfg.step_batch(stage), "max_segments": stage.max_segments,
        "questions_compiled": cfg.compile and not eager_questions, "warmup_sec": warmup_sec, "sec_per_step": wall, "data_wait_per_step": waited / steps,
        "gpu_kernel_sec_per_step": gpu, "gpu_busy": gpu / wall,
        "aten_ops_per_step": sum(e.name.startswith("aten::") for e in events) / profile_steps,
        "kernels_per_step": len(kernels) / profile_steps,
    }
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60)
    return cell, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="a training config whose run folder ('out') holds a run")
    ap.add_argument("--stage", type=int, help="the stage whose batches to time (default: the run's current one)")
    ap.add_argument("--warmup", type=int, default=30, help="untimed steps first (compiling happens here)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps")
    ap.add_argument("--profile-steps", type=int, default=5, help="steps under the profiler, after the timed ones")
    ap.add_argument("--eager-questions", action="store_true", help="also time with eager question segments")
    ap.add_argument("--batch", type=int, help="examples per step instead of the stage's (a CPU try needs few)")
    ap.add_argument("--workers", type=int, help="data-loader workers instead of the config's")
    ap.add_argument("--json")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # CPU: to try the script, not to time
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    cfg = TrainConfig.from_json(args.config)
    progress = json.loads((Path(cfg.out) / "trainer.json").read_text())
    stage = progress["stage"] if args.stage is None else args.stage
    if args.batch:
        cfg.stages[stage] = replace(cfg.stages[stage], batch=args.batch)
    if args.workers is not None:
        cfg = replace(cfg, workers=args.workers)
    print(f"{name}; {cfg.out} at step {progress['step']}; stage {stage}")
    print(f"| questions compiled | {args.warmup} warm-up steps, compiling (s) | s per step | data wait | GPU kernels | GPU busy | aten ops | kernels |")
    print("|---|---|---|---|---|---|---|---|")
    cells = []
    for eager_questions in (False, True) if args.eager_questions else (False,):
        torch._dynamo.reset()
        cell, table = measure(cfg, stage, progress["step"], eager_questions, args.warmup, args.steps,
                              args.profile_steps, device)
        cells.append(cell)
        print(f"| {'yes' if cell['questions_compiled'] else 'no'} | {cell['warmup_sec']:.1f} | {cell['sec_per_step']:.3f} | {cell['data_wait_per_step']:.3f}"
              f" | {cell['gpu_kernel_sec_per_step']:.3f} | {cell['gpu_busy']:.0%} | {cell['aten_ops_per_step']:,.0f}"
              f" | {cell['kernels_per_step']:,.0f} |", flush=True)
        if not eager_questions:
            print(table, flush=True)
        if args.json:  # after every cell: a call cut short by its time limit still returns what was measured
            Path(args.json).write_text(json.dumps({"device": name, "config": args.config, "step": progress["step"],
                                                   "cells": cells}, indent=1))


if __name__ == "__main__":
    main()
