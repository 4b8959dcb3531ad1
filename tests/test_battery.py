"""A battery of bad inputs through the REAL command (`python -m longqa` in a subprocess).

Every case checks the contract of ../shared/cli.md: the exit code, exactly one `longqa: error: ...` line
on stderr (warnings only where files are skipped), no traceback, and that no file in the case's folder
(state files included) was created or changed unless the call succeeded, with no `.*.tmp` left behind.

A process costs ~4 s of imports, so all cases are launched at once from a module-scoped fixture (a few
at a time) and the parametrised tests only look at the collected results.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import pickle
import shutil
import stat
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from conftest import babi_text
from safetensors.torch import load, save

from longqa import cli

pytestmark = pytest.mark.slow  # subprocesses / the real checkpoint on CPU: minutes

Q = "Where is Mary?"
TEXT = babi_text(30, seed=4) + "\n"
WORKERS = 3


# ---- cases ----------------------------------------------------------------------------------------


@dataclass
class Ctx:
    model: Path  # the tiny model
    state: bytes  # a good state of TEXT written by the tiny model
    root: Path


@dataclass
class Case:
    id: str
    setup: Callable[[Path, Ctx], list[str]]  # builds files in the case folder, returns the argv after `longqa`
    code: int
    words: tuple[str, ...] = ()  # must appear in the error line
    answers: int | None = None  # stdout lines expected on success
    warns: bool = False  # `longqa: warning:` lines allowed (skipped files)
    changes: tuple[str, ...] = ()  # files of the case folder that a successful call may create or change
    stdin: str = "devnull"  # devnull | closed (fd 0 closed, `<&-`)
    fsize: int | None = None  # RLIMIT_FSIZE for the child (a full disk that even root cannot ignore)
    feed_fifo: str | None = None  # name of a FIFO in the case folder to feed TEXT into from a thread
    skip: Callable[[Ctx], str | None] = lambda ctx: None
    check: Callable[[Path, Ctx], None] | None = None  # extra assertions after the run


def write(d: Path, name: str, data: bytes | str) -> Path:
    p = d / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return p


def text_file(d: Path) -> str:
    return str(write(d, "doc.txt", TEXT))


def state_variant(ctx: Ctx, d: Path, name: str, **meta: str) -> str:
    """The good state with some metadata replaced (tensors and checksum untouched)."""
    (n,) = struct.unpack("<Q", ctx.state[:8])
    old = json.loads(ctx.state[8 : 8 + n])["__metadata__"]
    return str(write(d, name, save(load(ctx.state), metadata={**old, **meta})))


class Evil:
    """Unpickling this creates a folder: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def evil_pickle(d: Path) -> Path:
    return write(d, "mem.pt", pickle.dumps(Evil(d / "PWNED")))


def mknod_or(d: Path, name: str, minor: int, fallback: str) -> str:
    """A private copy of /dev/full (minor 7) or /dev/null (minor 3), so that a regression that renames
    over the target cannot destroy the machine's own; the real one where mknod is not allowed."""
    try:
        os.mknod(d / name, stat.S_IFCHR | 0o666, os.makedev(1, minor))
        return str(d / name)
    except OSError:
        return fallback


def _proc_unreadable(ctx: Ctx) -> str | None:
    try:
        open("/proc/1/environ", "rb").close()
    except PermissionError:
        return None
    except OSError as e:
        return f"/proc/1/environ: {e}"
    return "/proc/1/environ is readable here: no way to make a permission error as this user"


def _corrupt_model(d: Path, ctx: Ctx) -> list[str]:
    m = d / "model"
    shutil.copytree(ctx.model, m)
    data = (m / "model.safetensors").read_bytes()
    (m / "model.safetensors").write_bytes(data[: len(data) // 3])
    return ["ask", text_file(d), Q, "--model", str(m)]


def _symlink_loops(d: Path, ctx: Ctx) -> list[str]:
    write(d, "docs/a.txt", TEXT)
    os.symlink("..", d / "docs" / "up")  # a directory loop: docs/up/docs/up/...
    os.symlink("y", d / "docs" / "x")  # a file loop: x -> y -> x
    os.symlink("x", d / "docs" / "y")
    return ["ask", str(d / "docs"), Q]


def _symlink_save(d: Path, ctx: Ctx) -> list[str]:
    write(d, "real.state", ctx.state)
    os.symlink("real.state", d / "link.state")
    write(d, "more.txt", babi_text(5, seed=9))
    return ["memorize", str(d / "more.txt"), "--save", str(d / "link.state")]


def _check_symlink_save(d: Path, ctx: Ctx) -> None:
    assert (d / "link.state").is_symlink(), "--save through a symlink replaced the link by a file"
    assert (d / "real.state").read_bytes() != ctx.state


def _check_still_a_device(name: str) -> Callable[[Path, Ctx], None]:
    def check(d: Path, ctx: Ctx) -> None:
        p = d / name
        if p.exists() or p.is_symlink():
            assert stat.S_ISCHR(p.lstat().st_mode), f"{name} was replaced by a regular file"

    return check


def _check_no_marker(d: Path, ctx: Ctx) -> None:
    assert not (d / "PWNED").exists(), "loading the state ran code from a pickle"


CASES: list[Case] = [
    # -- sources that do not exist or hold no text
    Case("missing_path", lambda d, c: ["ask", str(d / "nope.txt"), Q], 2, ("no such file", "nope.txt")),
    Case("missing_path_memorize", lambda d, c: ["memorize", str(d / "nope.txt"), "--save", str(d / "s")], 2, ("no such file",)),
    Case("empty_directory", lambda d, c: (d / "empty").mkdir() or ["ask", str(d / "empty"), Q], 2, ("no text files",)),
    Case(
        "directory_only_binary",
        lambda d, c: [write(d, "bin/a.png", b"\x89PNG\r\n\x1a\n\x00\x00"), write(d, "bin/b.dat", b"\x00\x01\x02")]
        and ["memorize", str(d / "bin"), "--save", str(d / "s")],
        2, ("no text files",), warns=True,
    ),
    Case(
        "directory_binary_mixed_in",
        lambda d, c: [write(d, "mix/a.txt", TEXT), write(d, "mix/b.bin", b"\x00\xff\x00\x10" * 50), write(d, "mix/c.txt", TEXT)]
        and ["ask", str(d / "mix"), Q, "Where is John?"],
        0, answers=2, warns=True,
    ),
    Case("empty_file", lambda d, c: ["memorize", str(write(d, "e.txt", b"")), "--save", str(d / "s")], 2, ("empty input",)),
    Case("whitespace_file", lambda d, c: ["ask", str(write(d, "w.txt", " \n\t\r\n\u3000\n  ")), Q], 2, ("empty input",)),
    Case("bom_only_file", lambda d, c: ["ask", str(write(d, "b.txt", b"\xef\xbb\xbf\n")), Q], 2, ("empty input",)),
    # -- odd encodings and contents that must still be read
    Case("invalid_utf8", lambda d, c: ["ask", str(write(d, "bad.txt", TEXT.encode() + b"\xff\xfe\xc3(\xa0\xa1 caf\xe9.")), Q], 0, answers=1),
    Case("utf16_le_bom", lambda d, c: ["ask", str(write(d, "u16.txt", TEXT.encode("utf-16"))), Q], 0, answers=1),
    Case("utf16_be_bom", lambda d, c: ["ask", str(write(d, "u16be.txt", b"\xfe\xff" + TEXT.encode("utf-16-be"))), Q], 0, answers=1),
    Case("nul_bytes", lambda d, c: ["ask", str(write(d, "nul.txt", TEXT.encode().replace(b" ", b" \x00", 20))), Q], 0, answers=1),
    Case("fake_gz_is_text", lambda d, c: ["ask", str(write(d, "plain.gz", TEXT)), Q], 0, answers=1),
    Case("truncated_gz", lambda d, c: ["ask", str(write(d, "t.gz", gzip.compress(TEXT.encode())[:-12])), Q], 2, ("truncated", "gzip")),
    Case("truncated_xz", lambda d, c: ["memorize", str(write(d, "t.xz", lzma.compress(TEXT.encode())[:40])), "--save", str(d / "s")], 2, ("xz",)),
    Case("corrupt_bz2", lambda d, c: ["ask", str(write(d, "c.bz2", bz2.compress(TEXT.encode())[:10] + b"garbage" * 10)), Q], 2, ("bz2",)),
    # -- things that are not regular files
    Case("permission_denied", lambda d, c: ["ask", "/proc/1/environ", Q], 1, ("permission denied",), skip=_proc_unreadable),
    Case("fifo_source", lambda d, c: os.mkfifo(d / "pipe") or ["ask", str(d / "pipe"), Q], 0, answers=1, feed_fifo="pipe"),
    Case("stdin_devnull", lambda d, c: ["ask", "-", Q], 2, ("empty input",)),
    Case("stdin_closed", lambda d, c: ["ask", "-", Q], 2, ("empty input",), stdin="closed"),
    Case("questions_stdin_closed", lambda d, c: ["ask", text_file(d), "--questions", "-"], 2, ("no questions",), stdin="closed"),
    Case("symlink_loops_in_directory", _symlink_loops, 0, answers=1, warns=True),
    Case("symlink_loop_as_source", lambda d, c: os.symlink("b", d / "a") or os.symlink("a", d / "b") or ["ask", str(d / "a"), Q], 2, ("symbolic links",)),
    # -- questions
    Case("empty_question", lambda d, c: ["ask", text_file(d), ""], 2, ("question is empty",)),
    Case("whitespace_question", lambda d, c: ["ask", text_file(d), Q, " \t "], 2, ("question is empty",)),
    Case("questions_file_is_directory", lambda d, c: (d / "qdir").mkdir() or ["ask", text_file(d), "--questions", str(d / "qdir")], 2, ("directory",)),
    Case(
        "ten_thousand_questions",
        lambda d, c: ["ask", str(write(d, "small.txt", "Mary went to the kitchen.")),
                      "--questions", str(write(d, "q.txt", "".join(f"Where is Mary {i}?\n\n" for i in range(10_000))))],
        0, answers=10_000, warns=True,  # not a trained question form: one warning line says so
    ),
    Case("stdin_twice", lambda d, c: ["memorize", "-", "-", "--save", str(d / "s")], 2, ("only once",)),
    # -- state files that must be refused
    Case("state_truncated_tensors", lambda d, c: ["ask", text_file(d), Q, "--memory", str(write(d, "s", c.state[: len(c.state) // 2]))], 2, ("damaged",)),
    Case("state_truncated_header", lambda d, c: ["ask", text_file(d), Q, "--memory", str(write(d, "s", c.state[:40]))], 2, ("not a longqa state",)),
    Case(
        "state_bit_flipped",
        lambda d, c: ["ask", str(write(d, "s", c.state[:-10] + bytes([c.state[-10] ^ 0x10]) + c.state[-9:])), Q],
        2, ("damaged",),
    ),
    Case("state_other_model", lambda d, c: ["ask", state_variant(c, d, "s", model_fingerprint="0123456789abcdef"), Q], 2, ("another model",)),
    Case(
        "state_future_version",
        lambda d, c: ["memorize", text_file(d), "--memory", state_variant(c, d, "s", format_version="2"), "--save", str(d / "out")],
        2, ("version 2",),
    ),
    Case("state_not_safetensors", lambda d, c: ["ask", text_file(d), Q, "--memory", str(write(d, "s", "just some text\n"))], 2, ("not a longqa state",)),
    Case("state_safetensors_not_ours", lambda d, c: ["ask", text_file(d), Q, "--memory", str(write(d, "s", save({"x": torch.zeros(2)})))], 2, ("not a longqa state",)),
    Case("state_is_directory", lambda d, c: (d / "sdir").mkdir() or ["ask", text_file(d), Q, "--memory", str(d / "sdir")], 2, ("directory",)),
    Case("save_is_directory", lambda d, c: (d / "sdir").mkdir() or ["ask", text_file(d), Q, "--save", str(d / "sdir")], 2, ("directory",)),
    Case("pickle_as_memory", lambda d, c: ["ask", text_file(d), Q, "--memory", str(evil_pickle(d))], 2, ("not a longqa state",), check=_check_no_marker),
    Case(
        "pickle_as_memory_memorize",
        lambda d, c: ["memorize", text_file(d), "--memory", str(evil_pickle(d)), "--save", str(d / "out")],
        2, ("not a longqa state",), check=_check_no_marker,
    ),
    # -- saving where it cannot be written
    Case("save_parent_is_a_file", lambda d, c: ["ask", text_file(d), Q, "--save", str(d / "doc.txt" / "s")], 1, ("cannot write", "Not a directory")),
    Case("save_into_proc", lambda d, c: ["memorize", text_file(d), "--save", "/proc/1/longqa-test.state"], 1, ("cannot write",)),
    Case("save_to_dev_full", lambda d, c: ["ask", text_file(d), Q, "--save", mknod_or(d, "full", 7, "/dev/full")],
         1, ("cannot write", "No space left"), check=_check_still_a_device("full")),
    Case("save_to_dev_null", lambda d, c: ["ask", text_file(d), Q, "--save", mknod_or(d, "null", 3, "/dev/null")],
         0, answers=1, check=_check_still_a_device("null")),
    Case(
        "save_disk_full_keeps_old_state",  # RLIMIT_FSIZE: writes past N bytes fail with EFBIG, even for root
        lambda d, c: ["ask", text_file(d), Q, "--save", str(write(d, "mem.state", c.state))],
        1, ("cannot write", "File too large"), fsize=4096,
    ),
    Case("save_through_symlink", _symlink_save, 0, changes=("real.state",), check=_check_symlink_save),
    # -- devices and models
    Case("device_cuda_without_gpu", lambda d, c: ["ask", text_file(d), Q, "--device", "cuda"], 2, ("cuda", "no CUDA"),
         skip=lambda c: "this machine has a GPU" if torch.cuda.is_available() else None),
    Case("device_unknown", lambda d, c: ["ask", text_file(d), Q, "--device", "tpu:0"], 2, ("device",)),
    Case("unknown_model_directory", lambda d, c: ["ask", text_file(d), Q, "--model", str(d / "no-model")], 2, ("model directory not found",)),
    Case("corrupt_model_safetensors", _corrupt_model, 2, ("cannot load model",)),
]

# Wrappers around the real command for what Popen cannot set up directly.
_CLOSED_STDIN = ["sh", "-c", 'exec "$@" <&-', "sh"]
_RLIMIT = (
    "import resource, runpy, sys; n = int(sys.argv.pop(1)); resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
    "runpy.run_module('longqa', run_name='__main__', alter_sys=True)"
)


# ---- running them ---------------------------------------------------------------------------------


@dataclass
class Result:
    rc: int
    out: list[str]
    err: str
    before: dict[str, object]
    after: dict[str, object]
    folder: Path
    ctx: Ctx
    skipped: str | None = None


def snapshot(root: Path) -> dict[str, object]:
    """Every entry below root (links not followed): bytes of regular files, the kind of the others."""
    snap: dict[str, object] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISREG(st.st_mode):
                snap[rel] = p.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                snap[rel] = ("link", os.readlink(p))
            else:
                snap[rel] = ("node", stat.S_IFMT(st.st_mode))
    return snap


def _feed(path: Path, stop: threading.Event) -> None:
    # Opening a FIFO for writing blocks until a reader opens it: poll with O_NONBLOCK (ENXIO while no
    # reader) so that the thread ends even if the command fails before reading.
    while not stop.is_set():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            stop.wait(0.05)
            continue
        os.set_blocking(fd, True)
        with os.fdopen(fd, "wb") as f:
            f.write(TEXT.encode())
        return


def run_case(case: Case, ctx: Ctx) -> Result:
    folder = ctx.root / case.id
    folder.mkdir()
    reason = case.skip(ctx)
    if reason:
        return Result(0, [], "", {}, {}, folder, ctx, skipped=reason)
    args = case.setup(folder, ctx)
    if "--model" not in args:
        args += ["--model", str(ctx.model)]
    args += ["-q"]
    if case.fsize is not None:
        argv = [sys.executable, "-c", _RLIMIT, str(case.fsize), *args]
    else:
        argv = [sys.executable, "-m", "longqa", *args]
    if case.stdin == "closed":
        argv = _CLOSED_STDIN + argv
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("LONGQA_DEBUG", None)
    env.pop("LONGQA_MODEL", None)
    before = snapshot(folder)
    stop = threading.Event()
    feeder = None
    if case.feed_fifo:
        feeder = threading.Thread(target=_feed, args=(folder / case.feed_fifo, stop), daemon=True)
        feeder.start()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=folder)
    try:
        out, err = p.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        err += b"\n(test: killed after 150 s)"
    finally:
        stop.set()
        if feeder:
            feeder.join(5)
    return Result(p.returncode, out.decode("utf-8", "replace").splitlines(), err.decode("utf-8", "replace"), before, snapshot(folder), folder, ctx)


@pytest.fixture(scope="module")
def results(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    root = tmp_path_factory.mktemp("battery")
    (root / "good.txt").write_text(TEXT, encoding="utf-8")
    assert cli.main(["memorize", str(root / "good.txt"), "--save", str(root / "good.state"), "--model", str(tiny_model), "-q"]) == 0
    ctx = Ctx(tiny_model, (root / "good.state").read_bytes(), root / "cases")
    ctx.root.mkdir()
    # The slowest case first, so that it does not end up alone at the end.
    order = sorted(CASES, key=lambda c: c.id != "ten_thousand_questions")
    with ThreadPoolExecutor(WORKERS) as pool:
        done = dict(zip([c.id for c in order], pool.map(lambda c: run_case(c, ctx), order)))
    return done


def test_enough_cases() -> None:
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, results: dict[str, Result]) -> None:
    r = results[case.id]
    if r.skipped:
        pytest.skip(r.skipped)
    assert r.rc == case.code, f"exit {r.rc}, expected {case.code}; stderr:\n{r.err}"
    assert "Traceback" not in r.err, r.err
    lines = r.err.splitlines()
    warnings = [line for line in lines if line.startswith("longqa: warning: ")]
    errors = [line for line in lines if line.startswith("longqa: error: ")]
    assert len(warnings) + len(errors) == len(lines), f"stray stderr lines:\n{r.err}"
    assert bool(warnings) == case.warns, f"warnings {'expected' if case.warns else 'unexpected'}:\n{r.err}"
    if case.code == 0:
        assert errors == [], r.err
        if case.answers is not None:
            assert len(r.out) == case.answers
            assert all("\n" not in a and "\t" not in a for a in r.out[:50])
    else:
        assert len(errors) == 1, r.err
        assert r.out == [], "a failed call printed answers"
        for w in case.words:
            assert w.lower() in errors[0].lower(), errors[0]
    # Nothing created or changed unless the call succeeded (and then only the files it may write).
    leftovers = [k for k in r.after if Path(k).name.endswith(".tmp")]
    assert leftovers == [], f"temporary files left: {leftovers}"
    allowed = set(case.changes) if case.code == 0 else set()
    changed = {k for k in r.before.keys() | r.after.keys() if r.before.get(k) != r.after.get(k)}
    assert changed <= allowed, f"files created or changed: {sorted(changed - allowed)}"
    if case.changes and case.code == 0:
        assert changed == allowed, f"expected {sorted(allowed)} to be written"
    if case.check:
        case.check(r.folder, r.ctx)


def test_no_temp_files_next_to_dev_full(results: dict[str, Result]) -> None:
    # Where /dev/full itself was used (no mknod), a temp file in /dev would be the leftover.
    assert not list(Path("/dev").glob(".full.*.tmp"))
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)
