"""The `longqa` command line: a thin layer over longqa.engine (contract: ../shared/cli.md).

stdout carries answers only; progress, stats, warnings and errors go to stderr. Every option, input and
environment variable is checked (longqa.preflight) before anything is read and before torch is imported,
so a mistake is refused at once; torch comes with the model, after the checks.

Questions are read as people type them (longqa.questions.parse_question). One the model cannot answer (no
trained form, or a person or object it does not know, or one the text never mentions) gets the answer
line `?` (NO_ANSWER), a `"supported": false` or a `"reason"` in --json, and one warning line; if no
question at all is one the model answers, nothing is read and the exit code is 2.
"""

from __future__ import annotations

import gc
import importlib
import io
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from longqa import __version__
from longqa.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    InputError,
    LongQAError,
    RuntimeFailure,
    Stop,
    printable,
    show,
    valid_text,
)
from longqa.launch import install_signal_handlers, signals_held
from longqa.questions import FORMS_HELP, NO_ANSWER, Question, parse_question

if TYPE_CHECKING:
    from longqa import preflight
    from longqa.input.reader import Document
    from longqa.memory_file import Layout, Memory



LAB_COMMANDS = ("generate", "eval", "train", "export", "tokenizer")  # longqa.lab.cli


class Commands(TyperGroup):
    """ask and memorize, plus the lab's commands, whose module is imported only when one of them is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *LAB_COMMANDS]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in LAB_COMMANDS:
            return _readable(super().get_command(ctx, name))
        try:
            lab = importlib.import_module("longqa.lab.cli")
        except ModuleNotFoundError as e:
            if not (e.name or "").startswith("longqa.lab"):
                raise
            raise InputError(f"'{name}' is a lab command, and this install has no lab: use a source checkout (pip install -e .)") from None
        return _readable(typer.main.get_command(lab.app).get_command(ctx, name))  # type: ignore[attr-defined]


def _readable(command: click.Command | None) -> click.Command | None:
    """Help that names arguments by their metavar alone: typer would add Python types (`<list[str]>`) and
    braces (`{SOURCE}`), which mean nothing to a user."""
    for param in getattr(command, "params", []):
        if getattr(param, "param_type_name", None) == "argument":
            plain = param.metavar or param.name.upper()
            param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
            usage = plain if param.required else f"[{plain}]"
            if param.nargs != 1 and not plain.endswith("..."):
                usage += "..."
            param._usage_display_name = lambda usage=usage: usage  # type: ignore[method-assign]
        elif getattr(param, "param_type_name", None) == "option" and param.metavar is None and hasattr(param, "display_type_rich"):
            # typer 0.28 (the GPU machine's image) has no display_type_rich: its help keeps typer's words there
            param.display_type_rich = lambda ctx, shown=param.display_type_rich: _type_word(shown(ctx))  # type: ignore[method-assign]
    return command


_TYPE_WORDS = {"int": "N", "float": "NUMBER", "str": "TEXT", "list[str]": "TEXT", "Path": "PATH"}


def _type_word(shown: str | None) -> str | None:
    """typer's "<int>", "<str>", "<list[str]>" as the word a user knows: N, TEXT, ..."""
    return _TYPE_WORDS.get(shown.strip("<>"), shown.strip("<>").upper()) if shown else shown


app = typer.Typer(
    cls=Commands,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Answer questions about texts far longer than any context window, with an associative recurrent memory. "
    f"It answers the bAbI question forms it was trained on: {FORMS_HELP}. Any other question gets the answer '?'.",
)

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", metavar="DIR", help="Model directory (default: env LONGQA_MODEL, then the shipped one)."),
]
DeviceOpt = Annotated[str, typer.Option("--device", metavar="DEVICE", help="auto | cpu | cuda | cuda:N (auto: GPU if present).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no stats line.")]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="GPU: compile the reading step with torch.compile, about 2x faster per token. Costs 7-32 s once "
        "per run (H100; see BENCHMARKS.md), so it pays for very long documents or many documents at once.",
    ),
]
HiddenOpt = Annotated[bool, typer.Option("--hidden", help="In a directory, also read hidden files and folders (.git, .*).")]
GlobOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--glob", "-g", metavar="GLOB",
        help="In a directory, read only files matching GLOB ('*.txt'; with a '/', the path below the directory); "
        "'!GLOB' leaves matching files and folders out. Repeatable, as in ripgrep.",
    ),
]


# ---- messages -----------------------------------------------------------------------------------

_doing = ["starting"]  # what the program is doing, for the one line an unexpected error gets


def doing(what: str) -> None:
    """Enter a phase of the run. A stop signal whose exception a library swallowed ends the run here."""
    stopped()
    _doing[0] = what


def stopped() -> None:
    """Raise the stop signal received during this run, if any (launch.received)."""
    from longqa import launch

    if launch.received is not None:
        raise launch.received


def warn(message: str) -> None:
    stopped()  # after a stop signal the only line is the signal's
    print(f"longqa: warning: {message}", file=sys.stderr, flush=True)


def info(message: str, quiet: bool) -> None:
    stopped()
    if not quiet:
        print(f"longqa: {message}", file=sys.stderr, flush=True)


class Output:
    """stdout, one whole line at a time, and a failed write is an error (exit 1), never answers silently lost.

    A signal (SIGINT, SIGTERM) that comes while a line waits to be written (a full pipe) ends the run before
    any of the line is out; once part of a line is out, signals wait until the rest is: no line is ever cut
    in half, and a reader that never reads can still be interrupted between lines."""

    def __init__(self) -> None:
        self.stream = sys.stdout

    def line(self, text: str) -> None:
        stopped()  # no answer goes out after a stop signal, even one a library swallowed
        if self.stream is None:
            raise RuntimeFailure("standard output is closed: the answers were lost")
        data = (text + "\n").encode("utf-8")
        try:
            try:
                self.stream.flush()
                fd = self.stream.fileno()
            except (AttributeError, ValueError, io.UnsupportedOperation):
                fd = None
            if fd is None:  # not a file (tests capture stdout with a stream): one write, signals held
                with signals_held():
                    self.stream.write(text + "\n")
                    self.stream.flush()
                return
            view = memoryview(data)
            view = view[os.write(fd, view) :]  # a signal before anything is written: no line at all
            if view:
                with signals_held():
                    while view:
                        view = view[os.write(fd, view) :]
        except BrokenPipeError:
            raise
        except OSError as e:
            raise RuntimeFailure(f"cannot write the answers to standard output: {e.strerror or e}") from None


# ---- questions ----------------------------------------------------------------------------------


def collect_questions(args: list[str] | None, questions_file: str | None, source: str) -> list[str]:
    questions = list(args or [])
    if any(not q.strip() for q in questions):
        raise InputError("a question is empty")
    if questions_file is not None:
        if questions_file == "-" and source == "-":
            raise InputError("standard input cannot be both SOURCE and --questions")
        where = show(questions_file, 200)
        try:
            if questions_file == "-":
                # sys.stdin is None when the process was started with fd 0 closed: no questions from it.
                stdin = sys.stdin
                buffer = getattr(stdin, "buffer", None)
                text = "" if stdin is None else buffer.read().decode("utf-8-sig", "replace") if buffer else stdin.read()
                lines = text.splitlines()
            else:
                with open(questions_file, "rb") as f:
                    lines = f.read().decode("utf-8-sig", "replace").splitlines()
        except FileNotFoundError:
            raise InputError(f"no such questions file: {where}") from None
        except IsADirectoryError:
            raise InputError(f"questions file is a directory: {where}") from None
        except OSError as e:
            raise LongQAError(f"cannot read questions file {where}: {e.strerror or e}", EXIT_FAILURE) from None
        questions += [line.strip() for line in lines if line.strip()]
    if not questions:
        raise InputError("no questions: give them after SOURCE or with --questions FILE")
    return [q.strip() for q in questions]


def check_questions(raw: list[str], quiet_warnings: bool = False) -> list[Question]:
    """Each question as the model reads it. Those it cannot answer get one warning line (or, if that is all
    of them, an InputError: nothing would be worth reading for). A question that names a file is most
    likely a second SOURCE given by mistake: say that too."""
    qs = [parse_question(q) for q in raw]
    bad = list({q.asked: q for q in qs if not q.supported}.values())
    if not bad:
        return qs
    first = bad[0]
    hint = ""
    files = [q.asked for q in bad if os.path.exists(q.asked)]
    if files:
        hint = f"; {show(files[0])} names a file, but ask reads one SOURCE (a directory reads all its files)"
    if len(bad) == len(qs):
        which = f"{show(first.asked)} ({first.problem})" if len(bad) == 1 else f"{len(bad)} questions, the first {show(first.asked)} ({first.problem})"
        raise InputError(f"no question the model can answer: {which}{hint}; it answers: {FORMS_HELP}")
    if not quiet_warnings:
        which = (
            f"{show(first.asked)} is not a question the model can answer ({first.problem}), so its answer line is '{NO_ANSWER}'"
            if len(bad) == 1
            else f"{len(bad)} questions are not ones the model can answer, so their answer lines are '{NO_ANSWER}'; "
            f"the first: {show(first.asked)} ({first.problem})"
        )
        warn(f"{which}{hint}; it answers: {FORMS_HELP}")
    return qs


Result = tuple[str, str | None]  # (answer line, why it is NO_ANSWER, or None)


def answers_for(engine, pairs: list[tuple[Memory, Question]]) -> list[Result]:
    """An answer for each (memory, question): the model's where it can answer, NO_ANSWER and why where not."""
    import torch

    results: list[Result | None] = [None] * len(pairs)
    finite: dict[int, bool] = {}
    to_model = []
    for i, (m, q) in enumerate(pairs):
        if id(m) not in finite:
            finite[id(m)] = bool(torch.isfinite(m.state.A).all() and torch.isfinite(m.state.z).all())
        missing = [n for n in q.names if m.mentions is not None and n not in m.mentions]
        if not q.supported:
            results[i] = (NO_ANSWER, q.problem)
        elif not finite[id(m)]:
            results[i] = (NO_ANSWER, "the memory holds NaN or infinite values (the model diverged on this text)")
        elif missing:
            results[i] = (NO_ANSWER, f"the text never mentions {' or '.join(missing)}")
        else:
            to_model.append(i)
    if to_model:
        doing("answering")
        answers = engine.answer_pairs([(pairs[i][0], pairs[i][1].text) for i in to_model])
        for i, a in zip(to_model, answers):
            results[i] = (a, None) if a.strip() else (NO_ANSWER, "the model gave no answer")
    return results  # type: ignore[return-value]


def warn_unanswered(found: list[tuple[str | None, Question, Result]]) -> None:
    """One line for the supported questions that got NO_ANSWER (unsupported ones were warned about already)."""
    unanswered = [(src, q, r) for src, q, r in found if q.supported and r[1] is not None]
    if not unanswered:
        return
    src, q, (_, why) = unanswered[0]
    where = f"{show(src, 120)}: " if src is not None else ""
    if len(unanswered) == 1:
        warn(f"{where}{show(q.asked)}: {why}, so its answer line is '{NO_ANSWER}'")
    else:
        warn(f"{len(unanswered)} answers are '{NO_ANSWER}' because the model cannot answer them from this text; the first: {where}{show(q.asked)}: {why}")


def emit(out: Output, q: Question, result: Result, as_json: bool, extra: dict, with_source: bool = False) -> None:
    answer, why = result
    if as_json:
        obj = {"question": valid_text(q.asked), "answer": answer, "supported": q.supported, **extra}
        if why is not None:
            obj["reason"] = why
        out.line(json.dumps(obj, ensure_ascii=False))
    else:
        # One line per answer, whatever the model generated: line breaks or tabs would break the
        # one-answer-per-line contract and the tab-separated `--each` output.
        prefix = f"{extra['source']}\t" if with_source else ""
        out.line(f"{prefix}{' '.join(answer.split())}")


# ---- the model and reading ----------------------------------------------------------------------


def _address_space_limit() -> str:
    """', the address-space limit (ulimit -v) is N GB' when one is set: the likeliest cause of a failed
    allocation or import on a machine with memory to spare."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return "" if soft == resource.RLIM_INFINITY else f"; the address-space limit (ulimit -v) is {soft / 1e9:.1f} GB"


def _import_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as e:
        limit = _address_space_limit()
        raise RuntimeFailure(
            f"cannot load torch ({type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else 'no message'}){limit}"
            + (", which may be too small" if limit else "")
        ) from None


def make_engine(model: str | Path | None, device: str, compile: bool = False):
    from longqa.checkpoint import resolve_model_dir

    doing("loading torch")
    _import_torch()
    from longqa.engine import Engine

    doing("loading the model")
    engine = Engine(resolve_model_dir(str(model) if model is not None else None), device, compile=compile)
    if compile and engine.device.type != "cuda":
        warn("--compile only applies on a GPU; reading without it")
    # torch, transformers and the model leave ~349K objects that live as long as the process. Frozen, the
    # collector stops walking them: a full collection while reading held the GIL for ~0.2 s, keeping the
    # thread that launches GPU work waiting behind it (benchmarks/gil.py counts and times both).
    gc.freeze()
    return engine


class Reporter:
    """Progress on stderr when it is a terminal, driven by the tokens the model has read, with an ETA from
    an estimate of the total (tokens per byte so far times the input's bytes); then one stats line."""

    def __init__(self, total_bytes: int | None, quiet: bool, device: str, ahead: Callable[[], int] = lambda: 0) -> None:
        self.quiet, self.device, self.total_bytes, self.ahead = quiet, device, total_bytes or None, ahead
        self.tokens = 0  # read by the model
        self.bytes = 0  # read from the input (ahead of the model)
        self.start = time.perf_counter()
        self.progress = None
        if not quiet and sys.stderr is not None and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("reading"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.completed:,.0f} of ~{task.fields[estimate]} tokens  {task.fields[rate]:,.0f} tokens/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.task = self.progress.add_task("read", total=None, estimate="?", rate=0.0)
            self.progress.start()

    def estimate(self) -> int | None:
        """The total tokens this read will come to: known exactly once every byte is read, else extrapolated."""
        if not self.total_bytes or not self.bytes:
            return None
        ahead = max(self.ahead(), self.tokens)
        return max(self.tokens, round(ahead * self.total_bytes / min(self.bytes, self.total_bytes)))

    def on_bytes(self, n: int) -> None:
        self.bytes += n

    def on_tokens(self, n: int) -> None:
        self.tokens += n
        if self.progress:
            est = self.estimate()
            rate = self.tokens / max(time.perf_counter() - self.start, 1e-9)
            self.progress.update(
                self.task, completed=self.tokens, total=est, estimate="?" if est is None else f"{est:,}", rate=rate
            )

    def stop(self) -> None:
        if self.progress:
            self.progress.stop()
            self.progress = None

    def done(self, tokens: int, what: str) -> float:
        self.stop()
        seconds = time.perf_counter() - self.start
        info(f"{what}: {tokens:,} tokens in {seconds:.2f} s ({tokens / max(seconds, 1e-9):,.0f} tokens/s, {self.device})", self.quiet)
        return seconds


def total_size(docs: list[Document]) -> int | None:
    sizes = [d.size for d in docs]
    return None if None in sizes else sum(sizes)  # type: ignore[arg-type]


def read_into(engine, memories: list[Memory], docs: list[list[Document]], rep: Reporter) -> None:
    doing("reading")
    engine.read(memories, docs, rep.on_bytes, rep.on_tokens)


def warn_replaced(counts: list[tuple[str, int]]) -> None:
    """One warning for all the bytes that were not UTF-8, with their count: (document name, bytes replaced)."""
    bad = [(name, n) for name, n in counts if n]
    if bad:
        total = sum(n for _, n in bad)
        where = show(bad[0][0], 120) if len(bad) == 1 else f"{len(bad)} files, the first {show(bad[0][0], 120)}"
        warn(f"{total:,} byte{'s' if total > 1 else ''} that {'are' if total > 1 else 'is'} not valid UTF-8 replaced by U+FFFD (in {where})")


def read_sources(engine, memory: Memory, docs: list[Document], quiet: bool) -> None:
    """Read documents into memory, with progress and stats; refuse empty input."""
    before = memory.tokens
    rep = Reporter(total_size(docs), quiet, engine.device.type, lambda: memory.tokens - before)
    read_into(engine, [memory], [docs], rep)
    if memory.tokens == before:
        rep.stop()  # no stats line: the error must be the only thing said
        names = ", ".join(show(d.name, 120) for d in docs[:3]) + (f" and {len(docs) - 3} more" if len(docs) > 3 else "")
        raise InputError(f"empty input: no text in {names}")
    warn_replaced([(d.name, d.stats.replaced) for d in docs])
    rep.done(memory.tokens - before, "read")


def load_memory(engine, layout: Layout, path: str) -> Memory:
    from longqa import memory_file

    doing("loading the saved memory")
    if path == "-":
        from longqa.input.reader import read_stdin_bytes

        return memory_file.decode(read_stdin_bytes(layout.max_bytes()), engine.fingerprint, layout)
    return memory_file.load(path, engine.fingerprint, layout)


# ---- commands -----------------------------------------------------------------------------------


@app.command(
    epilog=f"Answer line '{NO_ANSWER}': a question the model cannot answer (not a trained form, a name it does not "
    "know, or one the text never mentions); one warning line says why. Exit 2 if no question can be answered."
)
def ask(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="Text file, directory, '-' for stdin, or a saved memory STATE.")],
    questions: Annotated[list[str] | None, typer.Argument(metavar="QUESTION", help="Questions, answered in order.", show_default=False)] = None,
    questions_file: Annotated[str | None, typer.Option("--questions", metavar="FILE", help="File with one question per line ('-': stdin).")] = None,
    memory: Annotated[str | None, typer.Option("--memory", metavar="STATE", help="Start from this saved memory.")] = None,
    save: Annotated[str | None, typer.Option("--save", metavar="STATE", help="Also save the memory after reading.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per answer.")] = False,
    each: Annotated[bool, typer.Option("--each", help="Treat every file below SOURCE (a directory) as its own document.")] = False,
    hidden: HiddenOpt = False,
    globs: GlobOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    compile: CompileOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Read SOURCE once, then answer every question from that memory (answers on stdout, one per line)."""
    from longqa import preflight  # imported here: `longqa --version` and --help need none of it

    doing("checking the options")
    rank, _ = preflight.world()
    qs = check_questions(collect_questions(questions, questions_file, source), quiet_warnings=rank > 0)
    plan = preflight.check(
        "ask", [source], model, device, memory, save, each, hidden, globs, answers_to_stdout=True,
        warn=warn if rank == 0 else lambda _: None,
    )
    out = Output()
    if each:
        return ask_each(plan, qs, as_json, quiet, device, compile, out)
    from longqa import memory_file
    from longqa.memory_file import Layout

    engine = make_engine(plan.model_dir, device, compile)
    layout = Layout.of(engine)
    start = time.perf_counter()
    if plan.state_source:
        mem = load_memory(engine, layout, plan.state_source)
    else:
        mem = load_memory(engine, layout, memory) if memory else engine.new_memory()
        read_sources(engine, mem, plan.docs, quiet)
    if save:
        doing("saving the memory")
        memory_file.save(save, mem, engine.fingerprint)
    results = answers_for(engine, [(mem, q) for q in qs])
    seconds = round(time.perf_counter() - start, 3)
    warn_unanswered([(None, q, r) for q, r in zip(qs, results)])
    doing("writing the answers")
    for q, r in zip(qs, results):
        emit(out, q, r, as_json, {"source": printable(source), "tokens": mem.tokens, "seconds": seconds})


def ask_each(plan: preflight.Plan, qs: list[Question], as_json: bool, quiet: bool, device: str, compile: bool, out: Output) -> None:
    """Every file below SOURCE on its own, `batch` files per forward. Under torchrun each rank reads every
    world-th file of each round and rank 0 prints all answers, in the order one process would."""
    from longqa.distributed import gather_interleaved, join

    rank, world = join(device)  # under torchrun, each rank reads a share of the files
    engine = make_engine(plan.model_dir, device, compile)
    docs = plan.docs
    batch = 64 if engine.device.type == "cuda" else 8
    mine_docs = docs[rank::world]
    rep = Reporter(total_size(mine_docs), quiet or rank > 0, engine.device.type)
    tokens = 0
    unanswered: list[tuple[str | None, Question, Result]] = []
    replaced_in: list[tuple[str, int]] = []  # documents with bytes that were not UTF-8: one warning at the end
    for first in range(0, len(docs), batch * world):
        group = docs[first : first + batch * world][rank::world]
        mems = [engine.new_memory() for _ in group]
        rep.ahead = lambda mems=mems, base=rep.tokens: base + sum(m.tokens for m in mems)
        if group:
            read_into(engine, mems, [[d] for d in group], rep)
        results = answers_for(engine, [(m, q) for m in mems for q in qs]) if group else []
        n = len(qs)
        mine = [(d.name, m.tokens, results[i * n : (i + 1) * n], d.stats.replaced) for i, (d, m) in enumerate(zip(group, mems))]
        gathered = gather_interleaved(mine)
        if rank > 0:
            continue
        seconds = round(time.perf_counter() - rep.start, 3)
        for name, count, answers, replaced in gathered:
            tokens += count
            shown = printable(name)
            if count == 0:
                warn(f"{show(name, 120)}: no text")
            if replaced:
                replaced_in.append((name, replaced))
            unanswered += [(name, q, r) for q, r in zip(qs, answers) if count]
            doing("writing the answers")
            for q, r in zip(qs, answers):
                emit(out, q, r, as_json, {"source": shown, "tokens": count, "seconds": seconds}, with_source=True)
    if rank == 0:
        warn_replaced(replaced_in)
        warn_unanswered(unanswered)
    rep.done(tokens, f"read {len(docs)} documents")


@app.command()
def memorize(
    sources: Annotated[list[str], typer.Argument(metavar="SOURCE...", help="Files, directories or '-', read in order as one text.")],
    save: Annotated[str, typer.Option("--save", metavar="STATE", help="Where to write the memory.")],
    memory: Annotated[str | None, typer.Option("--memory", metavar="STATE", help="Append to this saved memory instead of starting empty.")] = None,
    hidden: HiddenOpt = False,
    globs: GlobOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    compile: CompileOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Read SOURCEs once into one memory and save it, to answer from later without re-reading."""
    from longqa import preflight

    doing("checking the options")
    plan = preflight.check("memorize", sources, model, device, memory, save, False, hidden, globs, warn=warn)
    from longqa import memory_file
    from longqa.memory_file import Layout

    engine = make_engine(plan.model_dir, device, compile)
    layout = Layout.of(engine)
    mem = load_memory(engine, layout, memory) if memory else engine.new_memory()
    read_sources(engine, mem, plan.docs, quiet)
    doing("saving the memory")
    memory_file.save(save, mem, engine.fingerprint)
    info(f"saved memory of {mem.tokens:,} tokens to {show(save, 200)}", quiet)


def version_callback(value: bool) -> None:
    if value:
        print(f"longqa {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


def _internal_error(e: BaseException) -> str:
    text = str(e).splitlines()[0][:200] if str(e).strip() else "no message"
    if isinstance(e, MemoryError) or "out of memory" in str(e).lower():
        return f"out of memory while {_doing[0]}{_address_space_limit()}"
    if isinstance(e, RecursionError):
        return f"input nested too deeply while {_doing[0]}"
    return f"internal error while {_doing[0]}: {type(e).__name__}: {text} (set LONGQA_DEBUG=1 for a traceback)"


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the command, turn every failure into one line on stderr and an exit code. A stop
    signal received during the run decides the outcome, however its exception fared on the way up (one line,
    its code, and no other error line)."""
    import signal

    from longqa import launch

    launch.received = None
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code, message = _run(argv)
    finally:  # a caller's own handlers (a test run's) come back; the program's are launch's anyway
        for sig, handler in before.items():
            if handler is not None:
                signal.signal(sig, handler)
    if launch.received is not None:
        code, message = launch.received.exit_code, f"longqa: {launch.received.message}"
    if message:
        print(message, file=sys.stderr)
    return code


def _run(argv: list[str] | None) -> tuple[int, str | None]:
    """(exit code, the one line for stderr or None)."""
    install_signal_handlers()
    _doing[0] = "starting"
    try:
        command = typer.main.get_command(app)
        result = command.main(args=argv, prog_name="longqa", standalone_mode=False)
        if result == EXIT_INTERRUPTED:  # click turns a KeyboardInterrupt into Abort -> Exit(130)
            return EXIT_INTERRUPTED, "longqa: interrupted"
        return (result if isinstance(result, int) else 0), None
    except Stop as stop:
        return stop.exit_code, f"longqa: {stop.message}"
    except LongQAError as e:
        return e.exit_code, f"longqa: error: {e}"
    except TyperException as e:  # usage errors from the argument parser (exit 2)
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `longqa`: the help is the message
            return e.exit_code, e.format_message()
        hint = f" (see 'longqa {ctx.info_name} --help')" if ctx and ctx.info_name != "longqa" else ""
        message = " ".join(valid_text(e.format_message()).split())
        return (e.exit_code if e.exit_code else EXIT_USAGE), f"longqa: error: {message[:300]}{hint}"
    except (KeyboardInterrupt, typer.Abort):
        return EXIT_INTERRUPTED, "longqa: interrupted"
    except BrokenPipeError:
        # The reader of our stdout went away (e.g. `| head`): nothing left to say.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, AttributeError, ValueError):
            pass
        return EXIT_FAILURE, None
    except Exception as e:
        if os.environ.get("LONGQA_DEBUG") == "1":
            traceback.print_exc()
        return EXIT_FAILURE, f"longqa: error: {_internal_error(e)}"
