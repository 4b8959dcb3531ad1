"""The lab's commands: generate, eval, train, export, tokenizer. The runtime CLI (longqa.cli) loads this
module only when one of them is run, so that `ask` and `memorize` never import the lab."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from longqa.cli import CompileOpt, DeviceOpt, ModelOpt, QuietOpt, info, make_engine, warn
from longqa.errors import InputError


def noise_sample() -> str:
    from longqa.lab.generate.noise import SAMPLE

    return SAMPLE


def resolve_model_dir(option: str | None) -> Path:
    from longqa.checkpoint import resolve_model_dir as resolve  # torch comes with it

    return resolve(option)


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


def have_matplotlib() -> bool:
    """Plots need the optional `train` extra; everything else runs without it."""
    return importlib.util.find_spec("matplotlib") is not None


PLOT_EXTRA = "matplotlib is not installed (pip install 'longqa[train]')"


def _length(spec: str) -> int:
    from longqa.lab.generate.haystack import parse_length

    try:
        return parse_length(spec.strip())
    except ValueError as e:
        raise InputError(str(e)) from None


def _lengths(spec: str) -> list[int]:
    return [_length(x) for x in spec.split(",") if x.strip()]


def _tasks(spec: str) -> list[str]:
    from longqa.lab.generate.babi import TASKS

    tasks = [t.strip().lower() for t in spec.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise InputError(f"unknown task {', '.join(bad) or spec!r}: choose from {', '.join(TASKS)}")
    return tasks


NoiseOpt = Annotated[
    list[str] | None, typer.Option("--noise", help="Noise text files (one paragraph per line; .xz/.gz ok). Default: the shipped held-out sample.")
]


@app.command()
def generate(
    output: Annotated[str, typer.Option("--output", "-o", help="Where to write the haystack text.")],
    task: Annotated[str, typer.Option("--task", help="qa1 ... qa5")] = "qa1",
    length: Annotated[str, typer.Option("--length", help="Context tokens: 0K, 4K, 128K, 1M ... or a number.")] = "4K",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    noise: NoiseOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print question and answer as JSON.")] = False,
    model: ModelOpt = None,
) -> None:
    """Write a BABILong-style haystack (a bAbI story hidden in real text); print its question and answer."""
    import random

    from longqa.checkpoint import load_model_dir
    from longqa.lab.generate import babi
    from longqa.lab.generate.haystack import NoiseBank, build, to_text

    (task_,) = _tasks(task)
    (n_tokens,) = _lengths(length)
    _, tokenizer = load_model_dir(resolve_model_dir(model))
    rng = random.Random(f"{seed}-{task_}-{n_tokens}")
    sample = babi.generate(task_, rng)
    bank = NoiseBank(noise or [noise_sample()], tokenizer) if n_tokens else None
    hay = build(sample, bank, tokenizer, n_tokens, rng)
    from longqa.memory_file import write_atomic

    write_atomic(output, to_text(hay).encode("utf-8"))
    if as_json:
        print(json.dumps({"task": task_, "length": n_tokens, "seed": seed, "tokens": hay.n_tokens,
                          "question": hay.question, "answer": hay.answer, "file": output}))
    else:
        print(hay.question)
        print(hay.answer)


@app.command("eval")
def eval_(
    tasks: Annotated[str, typer.Option("--tasks", help="Comma-separated tasks.")] = "qa1,qa2,qa3,qa4,qa5",
    lengths: Annotated[str, typer.Option("--lengths", help="Comma-separated context lengths.")] = "0K,1K,4K",
    samples: Annotated[int, typer.Option("--samples", "-n", help="Documents per task and length.")] = 100,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    batch: Annotated[int, typer.Option("--batch", help="Documents per forward.")] = 64,
    prefix: Annotated[str, typer.Option("--prefix", help="Extra noise read before each document, e.g. 32K (tests an aged memory).")] = "0",
    noise: NoiseOpt = None,
    json_out: Annotated[str | None, typer.Option("--json", help="Also write the results as JSON here.")] = None,
    plot_out: Annotated[str | None, typer.Option("--plot", help="Also draw accuracy vs length to this PNG.")] = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    compile: CompileOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Accuracy per task and length on generated BABILong-style documents (BABILong scoring)."""
    from rich.console import Console

    from longqa.lab.eval import evaluate, length_name, plot, qa5_breakdown, table, write_json

    task_list, length_list = _tasks(tasks), _lengths(lengths)
    if samples < 1:
        raise InputError("--samples must be at least 1")
    prefix_tokens = _length(prefix)
    if plot_out and not have_matplotlib():  # say so before the eval, not after it
        raise InputError(f"--plot needs {PLOT_EXTRA}")
    from longqa.distributed import join

    rank, world = join(device)
    engine = make_engine(model, device, compile)
    on_cell = lambda c: info(  # noqa: E731
        f"{c.task} {length_name(c.length)}: {100 * c.accuracy:.1f}% (shortcut {100 * c.last_mentioned:.0f}%, "
        f"{c.mean_tokens:,.0f} tokens, {c.seconds:.1f} s)", quiet or rank > 0)
    cells = evaluate(
        engine, noise or [noise_sample()], task_list, length_list, samples, seed, batch, on_cell, rank, world, prefix_tokens
    )
    if rank > 0:  # rank 0 reports for all
        return
    Console().print(table(cells))
    for cell in cells:  # the QA5 target: every question form, and gives that are not the story's last
        if cell.task == "qa5":
            info(qa5_breakdown(cell), quiet)
    meta = {"model": str(resolve_model_dir(model)), "device": str(engine.device), "noise": noise or [noise_sample()], "seed": seed, "prefix": prefix_tokens}
    if json_out:
        write_json(cells, json_out, meta)
    if plot_out:
        plot(cells, plot_out, f"{Path(meta['model']).name} on {', '.join(Path(n).name for n in meta['noise'])}")


@app.command()
def train(
    config: Annotated[str, typer.Argument(help="Training config JSON (see training/).")],
    max_minutes: Annotated[float, typer.Option("--max-minutes", help="Stop (and checkpoint) after this long.")] = 8.0,
    seed: Annotated[int | None, typer.Option("--seed", help="Instead of the config's seed (seed probes of one recipe).")] = None,
    out: Annotated[str | None, typer.Option("--out", help="Instead of the config's run folder.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Instead of the config's data workers (runs sharing a machine).")] = None,
) -> None:
    """Train, or resume the run in the config's folder; run under torchrun for several GPUs."""
    from dataclasses import replace

    from longqa.lab.train import TrainConfig, plot_log
    from longqa.lab.train import train as run

    try:
        cfg = TrainConfig.from_json(config)
        cfg = replace(cfg, seed=cfg.seed if seed is None else seed, out=out or cfg.out, workers=cfg.workers if workers is None else workers)
    except (OSError, ValueError, TypeError) as e:  # missing file, bad JSON or values, unknown keys
        raise InputError(f"bad training config {config}: {e}") from None
    run(cfg, max_minutes, log=lambda line: print(line, file=sys.stderr, flush=True))
    log = Path(cfg.out) / "log.jsonl"
    if log.is_file() and os.environ.get("RANK", "0") == "0":
        if have_matplotlib():
            plot_log(log, Path(cfg.out) / "train.png")
        else:  # the checkpoint and log.jsonl are written; only the picture is missing
            warn(f"no train.png: {PLOT_EXTRA}")


@app.command()
def export(
    run: Annotated[str, typer.Argument(help="Training checkpoint folder (the config's 'out').")],
    output: Annotated[str, typer.Argument(help="Model directory to write (config.json, model.safetensors, tokenizer.json).")],
) -> None:
    """Turn a training checkpoint into a model directory that `--model` accepts."""
    from longqa.lab.train import export as run_export

    if not (Path(run) / "trainer.json").is_file():
        raise InputError(f"{run} is not a training checkpoint (no trainer.json)")
    run_export(Path(run), Path(output))


@app.command()
def tokenizer(
    noise: Annotated[list[str], typer.Option("--noise", help="Training noise files.")],
    output: Annotated[str, typer.Option("--output", "-o")],
    vocab: Annotated[int, typer.Option("--vocab")] = 4096,
) -> None:
    """Train the byte-level BPE tokenizer on training noise plus generated bAbI stories."""
    from longqa.lab.generate.tokenizer import train_babilong_tokenizer

    train_babilong_tokenizer(noise, vocab).save(output)
