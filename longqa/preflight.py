"""Checks of a command's options, inputs and environment, all made before any text is read and before torch
is imported (which alone costs seconds): a mistake is refused in a fraction of a second, and never after
minutes of reading (cli.md: exit 2 for bad usage or input, 1 for what this process may not do).

`check()` is the one routine `ask` and `memorize` (and what else reads text) call: it returns a Plan, the
checked inputs, with the documents to read already listed.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from longqa.errors import InputError, RuntimeFailure, show
from longqa.input import reader
from longqa.input.reader import Document

_DEVICE = re.compile(r"auto|cpu|cuda(?::\d{1,4})?")


def env_int(name: str, default: int, lo: int = 0, hi: int | None = None, what: str = "a whole number") -> int:
    """An integer environment variable, or InputError naming it (never a bare ValueError)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = None
    if value is None or value < lo or (hi is not None and value > hi):
        bounds = f" from {lo} to {hi}" if hi is not None else f" ({lo} or more)"
        raise InputError(f"{name}={show(raw, 30)}: it must be {what}{bounds}")
    return value


def world() -> tuple[int, int]:
    """(rank, world size) as torchrun's environment gives them, checked; (0, 1) when not under torchrun."""
    size = env_int("WORLD_SIZE", 1, 1, 1 << 16, "a number of processes")
    if size == 1:
        return 0, 1
    rank = env_int("RANK", 0, 0, size - 1, "this process's rank")
    env_int("LOCAL_RANK", 0, 0, size - 1, "this process's local rank")
    return rank, size


def check_env() -> None:
    world()
    # tokenize_pool.worker_count's rule, checked here so that a typo fails before the model loads.
    env_int("LONGQA_TOKENIZER_WORKERS", 0, 0, 4096, "a number of processes")


def gpu_present() -> bool:
    """Whether this machine could have a CUDA GPU, without importing torch: the NVIDIA driver is loaded
    and CUDA_VISIBLE_DEVICES does not hide every device. (torch decides for real later.)"""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    if os.path.exists("/proc/driver/nvidia/version"):
        return True
    try:
        return any(re.fullmatch(r"nvidia\d+", n) for n in os.listdir("/dev"))
    except OSError:
        return False


def check_device(name: str) -> None:
    if not _DEVICE.fullmatch(name):
        raise InputError(f"unknown device {show(name, 30)} (use auto, cpu, cuda or cuda:N)")
    if name.startswith("cuda") and not gpu_present():
        raise InputError(f"--device {name}: no CUDA GPU is available on this machine")


def check_stdout() -> None:
    """Answers go to stdout: a closed one (`>&-`) would lose them all after the whole read."""
    try:
        os.fstat(1)
        ok = sys.stdout is not None
    except OSError:
        ok = False
    if not ok:
        raise RuntimeFailure("standard output is closed, so the answers would be lost; nothing was read")


@dataclass
class Plan:
    """What a command will do, every part of it checked."""

    model_dir: Path
    docs: list[Document] = field(default_factory=list)  # text to read, in order
    state_source: str | None = None  # SOURCE is a saved memory (a path, or '-' for stdin) to answer from
    fingerprint: str | None = None  # of model_dir, when a state had to be checked against it


def _stdin_kind() -> str:
    """'state', 'text', or raises: what standard input holds, from its first bytes."""
    from longqa.memory_file import is_state_header

    head = reader.stdin_head()
    if is_state_header(head):
        return "state"
    kind = reader.binary_kind(reader.decompressed_head(head))
    if kind:
        raise InputError(f"standard input is {kind}, not text; refused")
    return "text"


def check(
    command: str,
    sources: list[str],
    model: str | None,
    device: str,
    memory: str | None = None,
    save: str | None = None,
    each: bool = False,
    hidden: bool = False,
    globs: list[str] | None = None,
    answers_to_stdout: bool = False,
    warn: reader.Warn = lambda message: None,
) -> Plan:
    """The shared check of a reading command, in the order a user would fix things; raises InputError (exit 2)
    or RuntimeFailure (exit 1) with one line. Lists the documents, so a directory is walked once, here."""
    from longqa import memory_file
    from longqa.checkpoint import check_model_dir, fingerprint, resolve_model_dir

    check_env()
    _, size = world()
    if size > 1 and not each:
        # Under torchrun every rank would read the same text and print the same answers.
        raise InputError(f"{command} reads one text on one device; under torchrun use ask --each DIR or eval, which share work over the ranks")
    if each and (memory or save):
        # Silently ignoring them would leave the user without the STATE they asked for.
        raise InputError(f"--each reads every file on its own: it cannot be combined with {'--memory' if memory else '--save'}")
    if sources.count("-") > 1:
        raise InputError("standard input '-' can be given only once")
    for s in sources + ([memory] if memory else []):
        if s != "-" and not os.path.lexists(s):
            raise InputError(f"no such file or directory: {show(s, 200)}")
    if each and not os.path.isdir(sources[0]):
        raise InputError(f"--each needs a directory, and {show(sources[0], 200)} is not one")
    check_device(device)
    if answers_to_stdout:
        check_stdout()
    model_dir = resolve_model_dir(model)
    check_model_dir(model_dir)
    plan = Plan(model_dir)

    def fp() -> str:
        if plan.fingerprint is None:
            plan.fingerprint = fingerprint(model_dir)
        return plan.fingerprint

    if memory:
        if memory == "-":
            raise InputError("--memory takes a file; a saved memory on standard input is given as SOURCE: ask - ...")
        memory_file.check_header(memory, fp())
    for s in sources:
        is_state = _stdin_kind() == "state" if s == "-" else memory_file.is_state_file(s)
        if not is_state:
            continue
        where = "standard input holds" if s == "-" else f"{show(s, 200)} is"
        if command != "ask" or len(sources) > 1:
            raise InputError(f"{where} a saved memory, not text: give it with --memory" + (" FILE" if s == "-" else f" {show(s, 200)}"))
        if memory:
            raise InputError("give the saved memory either as SOURCE or with --memory, not both")
        if s != "-":
            memory_file.check_header(s, fp())
        plan.state_source = s
    if plan.state_source is None:
        plan.docs = [d for s in sources for d in reader.documents(s, warn, hidden, globs or ())]
    if save:
        memory_file.check_writable(save)
    return plan

