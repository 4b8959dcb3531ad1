"""The `longqa` command line: a thin layer over longqa.engine (contract: ../shared/cli.md).

stdout carries answers only; progress, stats, warnings and errors go to stderr. Torch is imported inside
the commands so that `longqa --help` is instant.
"""

from __future__ import annotations

import gc
import importlib.util
import io
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.exceptions import TyperException

from . import __version__
from .errors import InputError, LongQAError

DEFAULT_MODEL = "longqa-armt-small"
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Answer questions about texts far longer than any context window, with an associative recurrent memory.",
)

ModelOpt = Annotated[
    Optional[str], typer.Option("--model", "-m", help="Checkpoint directory (default: env LONGQA_MODEL, then the shipped one).")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N (auto: GPU if present).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no stats.")]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="GPU: compile the reading step with torch.compile, about 2x faster per token. Costs 7-32 s once "
        "per run (H100; see BENCHMARKS.md), so it pays for very long documents or many documents at once.",
    ),
]


def warn(message: str) -> None:
    print(f"longqa: warning: {message}", file=sys.stderr)


def info(message: str, quiet: bool) -> None:
    if not quiet:
        print(f"longqa: {message}", file=sys.stderr)


def default_model_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "weights" / DEFAULT_MODEL, here.parent / "weights" / DEFAULT_MODEL):
        if candidate.is_dir():
            return candidate
    raise InputError(
        f"no model: the default checkpoint weights/{DEFAULT_MODEL} is not installed; pass --model DIR or set LONGQA_MODEL"
    )


def model_dir(option: str | None) -> Path:
    if option:
        return Path(option)
    env = os.environ.get("LONGQA_MODEL")
    if not env:
        return default_model_dir()
    if not Path(env).is_dir():
        # Say where the path came from: the user may not remember having set the variable.
        raise InputError(f"LONGQA_MODEL={env} is not a model directory; fix or unset it, or pass --model DIR")
    return Path(env)


def one_process(what: str) -> None:
    """Under torchrun every rank would read the same text and print the same answers."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError(f"{what} reads one text on one device; under torchrun use ask --each DIR or eval, which share work over the ranks")


def have_matplotlib() -> bool:
    """Plots need the optional `train` extra; everything else runs without it."""
    return importlib.util.find_spec("matplotlib") is not None


PLOT_EXTRA = "matplotlib is not installed (pip install 'longqa[train]')"


def make_engine(model: str | None, device: str, compile: bool = False):
    from .engine import Engine

    engine = Engine(model_dir(model), device, compile=compile)
    if compile and engine.device.type != "cuda":
        warn("--compile only applies on a GPU; reading without it")
    # torch, transformers and the model leave ~349K objects that live as long as the process. Frozen, the
    # collector stops walking them: a full collection while reading held the GIL for ~0.2 s, keeping the
    # thread that launches GPU work waiting behind it (benchmarks/gil.py counts and times both).
    gc.freeze()
    return engine


class Reporter:
    """Rich progress on stderr when it is a terminal (bytes, tokens, tokens/s, ETA), plus a stats line."""

    def __init__(self, total_bytes: int | None, quiet: bool) -> None:
        self.quiet = quiet
        self.tokens = 0
        self.start = time.perf_counter()
        self.progress = None
        if not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("reading"),
                BarColumn(),
                DownloadColumn(),
                TextColumn("{task.fields[tokens]:,} tokens  {task.fields[rate]:,.0f} tok/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.task = self.progress.add_task("read", total=total_bytes, tokens=0, rate=0.0)
            self.progress.start()

    def on_bytes(self, n: int) -> None:
        if self.progress:
            self.progress.advance(self.task, n)

    def on_tokens(self, n: int) -> None:
        self.tokens += n
        if self.progress:
            rate = self.tokens / max(time.perf_counter() - self.start, 1e-9)
            self.progress.update(self.task, tokens=self.tokens, rate=rate)

    def stop(self) -> None:
        if self.progress:
            self.progress.stop()
            self.progress = None

    def done(self, tokens: int, what: str) -> float:
        self.stop()
        seconds = time.perf_counter() - self.start
        info(f"{what}: {tokens:,} tokens in {seconds:.2f} s ({tokens / max(seconds, 1e-9):,.0f} tokens/s)", self.quiet)
        return seconds


def collect_questions(args: list[str] | None, questions_file: str | None, source: str) -> list[str]:
    questions = list(args or [])
    if any(not q.strip() for q in questions):
        raise InputError("a question is empty")
    if questions_file is not None:
        if questions_file == "-" and source == "-":
            raise InputError("standard input cannot be both SOURCE and --questions")
        try:
            if questions_file == "-":
                # sys.stdin is None when the process was started with fd 0 closed: no questions from it.
                f = io.StringIO() if sys.stdin is None else sys.stdin
            else:
                f = open(questions_file, encoding="utf-8", errors="replace")
            with f:
                questions += [line.strip() for line in f if line.strip()]
        except FileNotFoundError:
            raise InputError(f"no such questions file: {questions_file}") from None
        except IsADirectoryError:
            raise InputError(f"questions file is a directory: {questions_file}") from None
        except OSError as e:
            raise LongQAError(f"cannot read questions file {questions_file}: {e.strerror or e}", 1) from None
    if not questions:
        raise InputError("no questions: give them after SOURCE or with --questions FILE")
    return [q.strip() for q in questions]


def warn_unknown_forms(questions: list[str]) -> None:
    """A question of a form the model never trained on still gets an answer, but a guess: say so, in one
    stderr line however many there are. A question that names a file is most likely a second SOURCE
    given by mistake: say that too."""
    from .babi import question_task
    from .text import normalize

    unknown = [q for q in dict.fromkeys(questions) if question_task(normalize(q)) is None]
    if not unknown:
        return
    forms = "question forms the model was trained on (README: What it does)"
    if len(unknown) == 1:
        message = f"{unknown[0]!r} is not one of the {forms}, so its answer is a guess"
    else:
        message = f"{len(unknown)} questions are not {forms}, so their answers are guesses; the first: {unknown[0]!r}"
    files = [q for q in unknown if os.path.exists(q)]
    if files:
        message += f"; {files[0]!r} names a file, but ask reads one SOURCE (a directory reads all its files)"
    warn(message)


def total_size(docs) -> int | None:
    sizes = [d.size for d in docs]
    return None if None in sizes else sum(sizes)


def read_sources(engine, memory, sources: list[str], quiet: bool) -> None:
    """Read SOURCEs (not state files) into memory, with progress and stats; refuse empty input."""
    from .reader import documents

    docs = [d for s in sources for d in documents(s, warn)]
    before = memory.tokens
    rep = Reporter(total_size(docs), quiet)
    engine.read([memory], [docs], rep.on_bytes, rep.on_tokens)
    if memory.tokens == before:
        rep.stop()  # no stats line: the error must be the only thing said
        raise InputError(f"empty input: no text in {', '.join(sources)}")
    rep.done(memory.tokens - before, "read")


def load_memory(engine, path: str):
    from . import state

    return state.load(path, engine.fingerprint)


def check_exists(paths: list[str]) -> None:
    for p in paths:
        if p != "-" and not os.path.lexists(p):
            raise InputError(f"no such file or directory: {p}")


def emit(question: str, answer: str, as_json: bool, extra: dict, with_source: bool = False) -> None:
    if as_json:
        print(json.dumps({"question": question, "answer": answer, **extra}, ensure_ascii=False), flush=True)
    else:
        # One line per answer, whatever the model generated: line breaks or tabs would break the
        # one-answer-per-line contract and the tab-separated `--each` output.
        prefix = f"{extra['source']}\t" if with_source else ""
        print(f"{prefix}{' '.join(answer.split())}", flush=True)


@app.command()
def ask(
    source: Annotated[str, typer.Argument(help="Text file, directory, '-' for stdin, or a saved memory STATE.")],
    questions: Annotated[Optional[list[str]], typer.Argument(help="Questions, answered in order.")] = None,
    questions_file: Annotated[Optional[str], typer.Option("--questions", help="File with one question per line ('-': stdin).")] = None,
    memory: Annotated[Optional[str], typer.Option("--memory", help="Start from this saved memory STATE.")] = None,
    save: Annotated[Optional[str], typer.Option("--save", help="Also save the memory after reading to STATE.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per answer.")] = False,
    each: Annotated[bool, typer.Option("--each", help="Treat every file below SOURCE (a directory) as its own document.")] = False,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    compile: CompileOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Read SOURCE once, then answer every question from that memory (answers on stdout, one per line)."""
    qs = collect_questions(questions, questions_file, source)
    if each and (memory or save):
        # Silently ignoring them would leave the user without the STATE they asked for.
        raise InputError(f"--each reads every file on its own: it cannot be combined with {'--memory' if memory else '--save'}")
    check_exists([source] + ([memory] if memory else []))
    if each:
        from .distributed import join

        rank, world = join(device)  # under torchrun, each rank reads a share of the files
        if rank == 0:
            warn_unknown_forms(qs)
        return ask_each(make_engine(model, device, compile), source, qs, as_json, quiet, rank, world)
    one_process("ask")
    warn_unknown_forms(qs)
    from . import state  # torch comes with it: only after the checks, so bad input fails at once

    engine = make_engine(model, device, compile)
    start = time.perf_counter()
    if source != "-" and state.is_state_file(source):
        if memory:
            raise InputError("give the saved memory either as SOURCE or with --memory, not both")
        mem = load_memory(engine, source)
    else:
        mem = load_memory(engine, memory) if memory else engine.new_memory()
        read_sources(engine, mem, [source], quiet)
    if save:
        state.save(save, mem, engine.fingerprint)
    answers = engine.answer([mem], qs)[0]
    seconds = round(time.perf_counter() - start, 3)
    for q, a in zip(qs, answers):
        emit(q, a, as_json, {"source": source, "tokens": mem.tokens, "seconds": seconds})


def ask_each(engine, source: str, qs: list[str], as_json: bool, quiet: bool, rank: int = 0, world: int = 1) -> None:
    """Every file below SOURCE on its own, `batch` files per forward. Under torchrun each rank reads every
    world-th file of each round and rank 0 prints all answers, in the order one process would."""
    from .distributed import gather_interleaved
    from .reader import documents

    if not os.path.isdir(source):
        raise InputError(f"--each needs a directory, and {source} is not one")
    docs = documents(source, warn if rank == 0 else lambda _: None)
    batch = 64 if engine.device.type == "cuda" else 8
    rep = Reporter(total_size(docs[rank::world]), quiet or rank > 0)
    tokens = 0
    for start in range(0, len(docs), batch * world):
        group = docs[start : start + batch * world][rank::world]
        mems = [engine.new_memory() for _ in group]
        if group:
            engine.read(mems, [[d] for d in group], rep.on_bytes, rep.on_tokens)
        mine = [(d.name, m.tokens, a) for d, m, a in zip(group, mems, engine.answer(mems, qs) if group else [])]
        gathered = gather_interleaved(mine)
        if rank > 0:
            continue
        for name, n, answers in gathered:
            tokens += n
            if n == 0:
                warn(f"{name}: no text")
            for q, a in zip(qs, answers):
                emit(q, a, as_json, {"source": name, "tokens": n}, with_source=True)
    rep.done(tokens, f"read {len(docs)} documents")


@app.command()
def memorize(
    sources: Annotated[list[str], typer.Argument(help="Files, directories or '-', read in order as one text.")],
    save: Annotated[str, typer.Option("--save", help="Where to write the memory STATE.")],
    memory: Annotated[Optional[str], typer.Option("--memory", help="Append to this saved memory instead of starting empty.")] = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    compile: CompileOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Read SOURCEs once into one memory and save it, to answer from later without re-reading."""
    if sources.count("-") > 1:
        raise InputError("standard input '-' can be given only once")
    check_exists(sources + ([memory] if memory else []))
    one_process("memorize")
    from . import state  # torch comes with it: only after the checks, so bad input fails at once

    for s in sources:
        if s != "-" and state.is_state_file(s):  # it would be read as (binary) text
            raise InputError(f"{s} is a saved memory, not text: give it with --memory {s}")
    engine = make_engine(model, device, compile)
    mem = load_memory(engine, memory) if memory else engine.new_memory()
    read_sources(engine, mem, sources, quiet)
    state.save(save, mem, engine.fingerprint)
    info(f"saved memory of {mem.tokens:,} tokens to {save}", quiet)


def _length(spec: str) -> int:
    from .haystack import parse_length

    try:
        return parse_length(spec.strip())
    except ValueError as e:
        raise InputError(str(e)) from None


def _lengths(spec: str) -> list[int]:
    return [_length(x) for x in spec.split(",") if x.strip()]


def _tasks(spec: str) -> list[str]:
    from .babi import TASKS

    tasks = [t.strip().lower() for t in spec.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise InputError(f"unknown task {', '.join(bad) or spec!r}: choose from {', '.join(TASKS)}")
    return tasks


NOISE_SAMPLE = str(Path(__file__).resolve().parent / "data" / "noise-sample.txt")
NoiseOpt = Annotated[
    Optional[list[str]], typer.Option("--noise", help="Noise text files (one paragraph per line; .xz/.gz ok). Default: the shipped held-out sample.")
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

    from . import babi
    from .engine import load_checkpoint
    from .haystack import NoiseBank, build, to_text

    (task_,) = _tasks(task)
    (n_tokens,) = _lengths(length)
    _, tokenizer = load_checkpoint(model_dir(model))
    rng = random.Random(f"{seed}-{task_}-{n_tokens}")
    sample = babi.generate(task_, rng)
    bank = NoiseBank(noise or [NOISE_SAMPLE], tokenizer) if n_tokens else None
    hay = build(sample, bank, tokenizer, n_tokens, rng)
    from .state import write_atomic

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
    json_out: Annotated[Optional[str], typer.Option("--json", help="Also write the results as JSON here.")] = None,
    plot_out: Annotated[Optional[str], typer.Option("--plot", help="Also draw accuracy vs length to this PNG.")] = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    compile: CompileOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Accuracy per task and length on generated BABILong-style documents (BABILong scoring)."""
    from rich.console import Console

    from .evaluate import evaluate, length_name, plot, table, write_json

    task_list, length_list = _tasks(tasks), _lengths(lengths)
    if samples < 1:
        raise InputError("--samples must be at least 1")
    prefix_tokens = _length(prefix)
    if plot_out and not have_matplotlib():  # say so before the eval, not after it
        raise InputError(f"--plot needs {PLOT_EXTRA}")
    from .distributed import join

    rank, world = join(device)
    engine = make_engine(model, device, compile)
    on_cell = lambda c: info(  # noqa: E731
        f"{c.task} {length_name(c.length)}: {100 * c.accuracy:.1f}% (shortcut {100 * c.last_mentioned:.0f}%, "
        f"{c.mean_tokens:,.0f} tokens, {c.seconds:.1f} s)", quiet or rank > 0)
    cells = evaluate(
        engine, noise or [NOISE_SAMPLE], task_list, length_list, samples, seed, batch, on_cell, rank, world, prefix_tokens
    )
    if rank > 0:  # rank 0 reports for all
        return
    Console().print(table(cells))
    meta = {"model": str(model_dir(model)), "device": str(engine.device), "noise": noise or [NOISE_SAMPLE], "seed": seed, "prefix": prefix_tokens}
    if json_out:
        write_json(cells, json_out, meta)
    if plot_out:
        plot(cells, plot_out, f"{Path(meta['model']).name} on {', '.join(Path(n).name for n in meta['noise'])}")


@app.command()
def train(
    config: Annotated[str, typer.Argument(help="Training config JSON (see training/).")],
    max_minutes: Annotated[float, typer.Option("--max-minutes", help="Stop (and checkpoint) after this long.")] = 8.0,
) -> None:
    """Train or resume a checkpoint; run under torchrun for several GPUs."""
    from .train import TrainConfig, plot_log
    from .train import train as run

    try:
        cfg = TrainConfig.from_json(config)
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
    from .train import export as run_export

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
    from .tokenizer import train_babilong_tokenizer

    train_babilong_tokenizer(noise, vocab).save(output)


def version_callback(value: bool) -> None:
    if value:
        print(f"longqa {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


class Terminated(Exception):
    pass


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def entry() -> int:
    """The `longqa` program: main(), then ignore Ctrl-C and SIGTERM while the interpreter shuts down. By
    then the command has finished (a state is saved whole or not at all); a signal landing in the
    shutdown would otherwise print a traceback from an exit handler or end the process as killed."""
    code = main()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the command, turn every failure into one line on stderr and an exit code."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="longqa", standalone_mode=False)
        if result == EXIT_INTERRUPTED:  # typer turns Ctrl-C into Exit(130) before it reaches us
            print("longqa: interrupted", file=sys.stderr)
        return result if isinstance(result, int) else 0
    except LongQAError as e:
        print(f"longqa: error: {e}", file=sys.stderr)
        return e.exit_code
    except TyperException as e:  # usage errors from the argument parser (exit 2)
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `longqa`: the help is the message
            print(e.format_message(), file=sys.stderr)
            return e.exit_code
        hint = f" (see 'longqa {ctx.info_name} --help')" if ctx and ctx.info_name != "longqa" else ""
        print(f"longqa: error: {e.format_message()}{hint}", file=sys.stderr)
        return e.exit_code
    except (KeyboardInterrupt, typer.Abort):
        print("longqa: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("longqa: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:
        # The reader of our stdout went away (e.g. `| head`): nothing left to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:
        if os.environ.get("LONGQA_DEBUG") == "1":
            traceback.print_exc()
        msg = "out of memory" if isinstance(e, MemoryError) or "out of memory" in str(e) else f"{type(e).__name__}: {e}"
        print(f"longqa: error: {msg.splitlines()[0] if msg else type(e).__name__}", file=sys.stderr)
        return 1
