"""The `longqa` command line: a thin layer over longqa.engine (contract: ../shared/cli.md).

stdout carries answers only; progress, stats, warnings and errors go to stderr. Torch is imported inside
the commands so that `longqa --help` is instant.
"""

from __future__ import annotations

import gc
import importlib
import io
import json
import os
import signal
import sys
import time
import traceback
from typing import Annotated

import click
import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from longqa import __version__
from longqa.errors import InputError, LongQAError

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

LAB_COMMANDS = ("generate", "eval", "train", "export", "tokenizer")  # longqa.lab.cli


class Commands(TyperGroup):
    """ask and memorize, plus the lab's commands, whose module is imported only when one of them is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *LAB_COMMANDS]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in LAB_COMMANDS:
            return super().get_command(ctx, name)
        try:
            lab = importlib.import_module("longqa.lab.cli")
        except ModuleNotFoundError as e:
            if not (e.name or "").startswith("longqa.lab"):
                raise
            raise InputError(f"'{name}' is a lab command, and this install has no lab: use a source checkout (pip install -e .)") from None
        return typer.main.get_command(lab.app).get_command(ctx, name)  # type: ignore[attr-defined]


app = typer.Typer(
    cls=Commands,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Answer questions about texts far longer than any context window, with an associative recurrent memory.",
)

ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="Checkpoint directory (default: env LONGQA_MODEL, then the shipped one).")
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


def one_process(what: str) -> None:
    """Under torchrun every rank would read the same text and print the same answers."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError(f"{what} reads one text on one device; under torchrun use ask --each DIR or eval, which share work over the ranks")


def make_engine(model: str | None, device: str, compile: bool = False):
    from longqa.checkpoint import resolve_model_dir
    from longqa.engine import Engine

    engine = Engine(resolve_model_dir(model), device, compile=compile)
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
    from longqa.input.text import normalize
    from longqa.questions import question_task

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
    from longqa.input.reader import documents

    docs = [d for s in sources for d in documents(s, warn)]
    before = memory.tokens
    rep = Reporter(total_size(docs), quiet)
    engine.read([memory], [docs], rep.on_bytes, rep.on_tokens)
    if memory.tokens == before:
        rep.stop()  # no stats line: the error must be the only thing said
        raise InputError(f"empty input: no text in {', '.join(sources)}")
    rep.done(memory.tokens - before, "read")


def load_memory(engine, path: str):
    from longqa import memory_file as state

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
    questions: Annotated[list[str] | None, typer.Argument(help="Questions, answered in order.")] = None,
    questions_file: Annotated[str | None, typer.Option("--questions", help="File with one question per line ('-': stdin).")] = None,
    memory: Annotated[str | None, typer.Option("--memory", help="Start from this saved memory STATE.")] = None,
    save: Annotated[str | None, typer.Option("--save", help="Also save the memory after reading to STATE.")] = None,
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
        from longqa.distributed import join

        rank, world = join(device)  # under torchrun, each rank reads a share of the files
        if rank == 0:
            warn_unknown_forms(qs)
        return ask_each(make_engine(model, device, compile), source, qs, as_json, quiet, rank, world)
    one_process("ask")
    warn_unknown_forms(qs)
    from longqa import memory_file as state  # torch comes with it: only after the checks, so bad input fails at once

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
    from longqa.distributed import gather_interleaved
    from longqa.input.reader import documents

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
    memory: Annotated[str | None, typer.Option("--memory", help="Append to this saved memory instead of starting empty.")] = None,
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
    from longqa import memory_file as state  # torch comes with it: only after the checks, so bad input fails at once

    for s in sources:
        if s != "-" and state.is_state_file(s):  # it would be read as (binary) text
            raise InputError(f"{s} is a saved memory, not text: give it with --memory {s}")
    engine = make_engine(model, device, compile)
    mem = load_memory(engine, memory) if memory else engine.new_memory()
    read_sources(engine, mem, sources, quiet)
    state.save(save, mem, engine.fingerprint)
    info(f"saved memory of {mem.tokens:,} tokens to {save}", quiet)


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
