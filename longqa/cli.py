"""The `longqa` command line: a thin layer over longqa.engine (contract: ../shared/cli.md).

stdout carries answers only; progress, stats, warnings and errors go to stderr. Torch and transformers
are imported inside the commands so that `longqa --help` is instant.
"""

from __future__ import annotations

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
    chosen = option or os.environ.get("LONGQA_MODEL")
    return Path(chosen) if chosen else default_model_dir()


def make_engine(model: str | None, device: str):
    from .engine import Engine

    return Engine(model_dir(model), device)


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

    def done(self, tokens: int, what: str) -> float:
        if self.progress:
            self.progress.stop()
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
            f = sys.stdin if questions_file == "-" else open(questions_file, encoding="utf-8", errors="replace")
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
    rep.done(memory.tokens - before, "read")
    if memory.tokens == before:
        raise InputError(f"empty input: no text in {', '.join(sources)}")


def load_memory(engine, path: str):
    from . import state

    return state.load(path, engine.fingerprint)


def check_exists(paths: list[str]) -> None:
    for p in paths:
        if p != "-" and not os.path.lexists(p):
            raise InputError(f"no such file or directory: {p}")


def emit(question: str, answer: str, as_json: bool, extra: dict) -> None:
    if as_json:
        print(json.dumps({"question": question, "answer": answer, **extra}, ensure_ascii=False), flush=True)
    else:
        prefix = f"{extra['source']}\t" if "source" in extra and extra.get("each") else ""
        print(f"{prefix}{answer}", flush=True)


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
    quiet: QuietOpt = False,
) -> None:
    """Read SOURCE once, then answer every question from that memory (answers on stdout, one per line)."""
    from . import state

    qs = collect_questions(questions, questions_file, source)
    check_exists([source] + ([memory] if memory else []))
    engine = make_engine(model, device)
    if each:
        return ask_each(engine, source, qs, as_json, quiet)
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


def ask_each(engine, source: str, qs: list[str], as_json: bool, quiet: bool) -> None:
    from .reader import documents

    if not os.path.isdir(source):
        raise InputError(f"--each needs a directory, and {source} is not one")
    docs = documents(source, warn)
    batch = 64 if engine.device.type == "cuda" else 8
    rep = Reporter(total_size(docs), quiet)
    tokens = 0
    for start in range(0, len(docs), batch):
        group = docs[start : start + batch]
        mems = [engine.new_memory() for _ in group]
        engine.read(mems, [[d] for d in group], rep.on_bytes, rep.on_tokens)
        for doc, mem, answers in zip(group, mems, engine.answer(mems, qs)):
            tokens += mem.tokens
            if mem.tokens == 0:
                warn(f"{doc.name}: no text")
            for q, a in zip(qs, answers):
                emit(q, a, as_json, {"source": doc.name, "tokens": mem.tokens, "each": True})
    rep.done(tokens, f"read {len(docs)} documents")


@app.command()
def memorize(
    sources: Annotated[list[str], typer.Argument(help="Files, directories or '-', read in order as one text.")],
    save: Annotated[str, typer.Option("--save", help="Where to write the memory STATE.")],
    memory: Annotated[Optional[str], typer.Option("--memory", help="Append to this saved memory instead of starting empty.")] = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Read SOURCEs once into one memory and save it, to answer from later without re-reading."""
    from . import state

    if sources.count("-") > 1:
        raise InputError("standard input '-' can be given only once")
    check_exists(sources + ([memory] if memory else []))
    engine = make_engine(model, device)
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


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the command, turn every failure into one line on stderr and an exit code."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="longqa", standalone_mode=False)
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
