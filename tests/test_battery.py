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
import time
from collections.abc import Callable, Iterator
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
    stdin: str = "devnull"  # devnull | closed (fd 0 closed, `<&-`) | file:NAME (a file of the case folder)
    stdout: str = "pipe"  # pipe | closed (fd 1 closed, `>&-`)
    fsize: int | None = None  # RLIMIT_FSIZE for the child (a full disk that even root cannot ignore)
    address_space: int | None = None  # RLIMIT_AS for the child (ulimit -v)
    env: dict[str, str] | None = None  # extra environment
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


# ---- issue #32 and #33 ----------------------------------------------------------------------------

ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 64


def _one_warning(*words: str) -> Callable:
    def check(d: Path, ctx: Ctx, r: Result) -> None:
        warnings = [line for line in r.err.splitlines() if line.startswith("longqa: warning: ")]
        assert len(warnings) == 1, r.err
        for w in words:
            assert w in warnings[0], warnings[0]

    return check


def _answers(*expected: str | None) -> Callable:
    """The answer lines: a string must match exactly, None any answer; and all Nones equal."""
    def check(d: Path, ctx: Ctx, r: Result) -> None:
        assert len(r.out) == len(expected), r.out
        for got, want in zip(r.out, expected):
            assert want is None or got == want, r.out
        assert len({got for got, want in zip(r.out, expected) if want is None}) <= 1, r.out

    return check


def forged(ctx: Ctx, d: Path, name: str, tensors: dict | None = None, resign: bool = True, **meta: str) -> str:
    """The good state with tensors or metadata replaced and, with resign, a checksum that matches (SHA-256 is
    no signature: every field must be checked on its own)."""
    from longqa import memory_file

    (n,) = struct.unpack("<Q", ctx.state[:8])
    m = {**json.loads(ctx.state[8 : 8 + n])["__metadata__"], **meta}
    t = {**load(ctx.state), **(tensors or {})}
    if resign:
        dt = {torch.float32: "F32", torch.int64: "I64", torch.float64: "F64"}
        m["checksum"] = memory_file._checksum(m, {k: (dt[v.dtype], list(v.shape), v.contiguous().numpy().tobytes()) for k, v in t.items()})
    return str(write(d, name, save(t, metadata=m)))


def _tensor(ctx: Ctx, name: str) -> torch.Tensor:
    return load(ctx.state)[name]


def _sources_of(expected: list[str]) -> Callable:
    def check(d: Path, ctx: Ctx, r: Result) -> None:
        (n,) = struct.unpack("<Q", (d / "s").read_bytes()[:8])
        sources = json.loads(json.loads((d / "s").read_bytes()[8 : 8 + n])["__metadata__"]["sources"])
        assert [os.path.relpath(x, d / "repo") for x in sources] == expected

    return check


def _repo(d: Path) -> Path:
    for rel, text in [("a.txt", TEXT), (".hidden.txt", TEXT), (".git/COMMIT_EDITMSG", "Fix the reader.\n"),
                      (".venv/lib/x.txt", TEXT), ("notes.md", TEXT)]:
        write(d, f"repo/{rel}", text)
    return d / "repo"


def _odd_names(d: Path) -> Path:
    folder = d / "names"
    folder.mkdir()
    for raw in (b"bad\xff.txt", b"tab\there.txt", b"new\nline.txt"):
        with open(os.path.join(os.fsencode(folder), raw), "w") as f:
            f.write(TEXT)
    return folder


def _check_json_lines(d: Path, ctx: Ctx, r: Result) -> None:
    objs = [json.loads(line) for line in r.raw_out.decode("utf-8").splitlines()]  # strict UTF-8, then JSON
    assert sorted(os.path.basename(o["source"]) for o in objs) == ["bad\\xff.txt", "new\\nline.txt", "tab\\there.txt"]
    assert all(isinstance(o["seconds"], float) for o in objs)


def _check_text_lines(d: Path, ctx: Ctx, r: Result) -> None:
    lines = r.raw_out.decode("utf-8").splitlines()
    assert len(lines) == 3 and all(line.count("\t") == 1 for line in lines)


def _deep(d: Path, ctx: Ctx) -> list[str]:
    path = str(d / "deep")
    os.mkdir(path)
    for _ in range(sys.getrecursionlimit() + 50):
        path += "/d"
        os.mkdir(path)
    write(Path(path), "x.txt", TEXT)
    return ["ask", str(d / "deep"), Q]


def _remove_deep(d: Path, ctx: Ctx, r: Result) -> None:
    """pytest's cleanup (shutil.rmtree) recurses: remove the tree here, bottom up, and let the snapshot
    comparison run on what is left."""
    path = str(d / "deep")
    while os.path.isdir(path + "/d"):
        path += "/d"
    os.unlink(path + "/x.txt")
    while path != str(d):
        os.rmdir(path)
        path = os.path.dirname(path)


def _model_with(**changes: object) -> Callable[[Path, Ctx], list[str]]:
    def setup(d: Path, ctx: Ctx) -> list[str]:
        m = d / "model"
        shutil.copytree(ctx.model, m)
        cfg = json.loads((m / "config.json").read_text())
        (m / "config.json").write_text(json.dumps({**cfg, **changes}))
        return ["ask", text_file(d), Q, "--model", str(m)]

    return setup


def _binary_copy(d: Path) -> str:
    """A copy of a real executable (the issue used /bin/ls), else an ELF-looking file."""
    target = d / "ls-copy"
    if os.path.isfile("/bin/ls"):
        shutil.copy("/bin/ls", target)
    else:
        target.write_bytes(ELF)
    return str(target)


NEW_CASES: list[Case] = [
    # -- #32 1: questions as people type them
    Case("q_typed_variants", lambda d, c: ["ask", text_file(d), "where is mary?", "Where is mary?", "Where is Mary", "Where is Mary ?", Q],
         0, answers=5, check=_answers(None, None, None, None, None)),
    Case("q_meaning_of_life_alone", lambda d, c: ["ask", text_file(d), "What is the meaning of life?", "--save", str(d / "s")],
         2, ("no question the model can answer", "it answers: Where is Mary?")),
    Case("q_meaning_of_life_mixed", lambda d, c: ["ask", text_file(d), "What is the meaning of life?", Q], 0, answers=2, warns=True,
         check=lambda d, c, r: _answers("?", None)(d, c, r) or _one_warning("answer line is '?'", "it answers: Where is Mary?")(d, c, r)),
    Case("q_name_not_in_text", lambda d, c: ["ask", text_file(d), "Who gave the football to Fred?", Q], 0, answers=2, warns=True,
         check=lambda d, c, r: _answers("?", None)(d, c, r) or _one_warning("never mentions football or Fred")(d, c, r)),
    Case("q_unknown_name", lambda d, c: ["ask", text_file(d), "Where is Bob?", Q], 0, answers=2, warns=True,
         check=lambda d, c, r: _answers("?", None)(d, c, r) or _one_warning("no person or object called 'Bob'")(d, c, r)),
    Case("q_json_marks_unsupported", lambda d, c: ["ask", text_file(d), "What is the meaning of life?", Q, "--json"], 0, answers=2, warns=True,
         check=lambda d, c, r: [json.loads(x)["supported"] for x in r.out] == [False, True] or pytest.fail(r.out)),
    # -- #32 2 and #33 5: what is not text
    Case("binary_source", lambda d, c: ["ask", _binary_copy(d), Q], 2, ("ls-copy", "ELF executable, not text; refused")),
    Case("binary_source_memorize", lambda d, c: ["memorize", _binary_copy(d), "--save", str(d / "s")], 2, ("ELF executable",)),
    Case("binary_random_bytes", lambda d, c: ["ask", str(write(d, "r.dat", bytes(range(256)) * 20)), Q], 2, ("binary data",)),
    Case("binary_gz_source", lambda d, c: ["ask", str(write(d, "b.bin.gz", gzip.compress(ELF))), Q], 2, ("b.bin.gz", "ELF")),
    Case("binary_gz_in_directory", lambda d, c: [write(d, "mix/a.txt", TEXT), write(d, "mix/b.bin.gz", gzip.compress(ELF))]
         and ["ask", str(d / "mix"), Q], 0, answers=1, warns=True, check=_one_warning("b.bin.gz", "ELF executable, not text")),
    Case("utf16_without_bom", lambda d, c: ["ask", str(write(d, "u.txt", TEXT.encode("utf-16-le"))), Q], 2, ("UTF-16", "iconv")),
    Case("state_on_stdin", lambda d, c: write(d, "s", c.state) and ["ask", "-", Q], 0, answers=1, stdin="file:s"),
    Case("state_on_stdin_memorize", lambda d, c: write(d, "s", c.state) and ["memorize", "-", "--save", str(d / "out")],
         2, ("standard input holds a saved memory",), stdin="file:s"),
    Case("pickle_on_stdin", lambda d, c: evil_pickle(d) and ["ask", "-", Q], 2, ("standard input is a Python pickle",),
         stdin="file:mem.pt", check=_check_no_marker),
    # -- #32 3: hidden files, globs
    Case("hidden_skipped", lambda d, c: ["memorize", str(_repo(d)), "--save", str(d / "s")], 0, changes=("s",),
         check=_sources_of(["a.txt", "notes.md"])),
    Case("hidden_flag", lambda d, c: ["memorize", str(_repo(d)), "--hidden", "-g", "!.venv", "--save", str(d / "s")], 0, changes=("s",),
         check=_sources_of([".git/COMMIT_EDITMSG", ".hidden.txt", "a.txt", "notes.md"])),
    Case("glob_filter", lambda d, c: ["memorize", str(_repo(d)), "--glob", "*.md", "--save", str(d / "s")], 0, changes=("s",),
         check=_sources_of(["notes.md"])),
    Case("hidden_only", lambda d, c: write(d, "h/.notes.txt", TEXT) and ["ask", str(d / "h"), Q], 2, ("no text files", "--hidden")),
    # -- #32 5, #33 1: --save checked before reading
    Case("save_missing_dir", lambda d, c: ["ask", text_file(d), Q, "--save", "/nonexistent/dir/m.pt"], 2, ("no such directory",)),
    Case("save_onto_directory", lambda d, c: ["memorize", text_file(d), "--save", "/tmp"], 2, ("is a directory",)),
    Case("save_long_name_253", lambda d, c: ["memorize", text_file(d), "--save", str(d / ("m" * 249 + ".pt"))], 0,
         changes=("m" * 249 + ".pt",)),
    Case("save_name_too_long", lambda d, c: ["memorize", text_file(d), "--save", str(d / ("m" * 300))], 2, ("longer than",)),
    # -- #32 6: smaller defects
    Case("each_on_a_file", lambda d, c: ["ask", text_file(d), Q, "--each"], 2, ("--each needs a directory",)),
    Case("each_json_has_seconds", lambda d, c: [write(d, "e/a.txt", TEXT), write(d, "e/b.txt", TEXT)] and ["ask", str(d / "e"), Q, "--each", "--json"],
         0, answers=2, check=lambda d, c, r: all(isinstance(json.loads(x)["seconds"], float) for x in r.out) or pytest.fail(r.out)),
    Case("help_short", lambda d, c: ["ask", "-h"], 0,
         check=lambda d, c, r: ("<str>" not in r.raw_out.decode() and "SOURCE" in r.raw_out.decode()) or pytest.fail(r.raw_out.decode())),
    # -- #33 2-4: forged states (with a matching checksum where the field itself must be refused)
    Case("state_tokens_plus_1000", lambda d, c: ["ask", forged(c, d, "s", resign=False, tokens="1180"), Q], 2, ("checksum mismatch",)),
    Case("state_sources_changed", lambda d, c: ["ask", forged(c, d, "s", resign=False, sources='["x"]'), Q], 2, ("checksum mismatch",)),
    Case("state_tokens_negative", lambda d, c: ["ask", forged(c, d, "s", tokens="-1"), Q], 2, ("tokens is '-1', not a count",)),
    Case("state_tokens_1e30", lambda d, c: ["ask", forged(c, d, "s", tokens="1e30"), Q, "--json"], 2, ("not a count",)),
    Case("state_sources_dict", lambda d, c: ["ask", forged(c, d, "s", sources='{"a": 1}'), Q], 2, ("sources is not a list",)),
    Case("state_sources_int", lambda d, c: ["ask", forged(c, d, "s", sources="3"), Q], 2, ("sources is not a list",)),
    Case("state_A_half_columns", lambda d, c: ["ask", forged(c, d, "s", {"A": _tensor(c, "A")[..., ::2].contiguous()}), Q], 2, ("this model's are",)),
    Case("state_A_f64", lambda d, c: ["ask", forged(c, d, "s", {"A": _tensor(c, "A").double()}), Q], 2, ("A is 'F64', expected F32",)),
    Case("state_pending_1e9", lambda d, c: ["ask", forged(c, d, "s", {"pending": torch.tensor([5, 10**9])}, tokens="18"), Q], 2,
         ("outside the vocabulary",)),
    Case("state_pending_minus_1", lambda d, c: ["ask", forged(c, d, "s", {"pending": torch.tensor([5, -1])}, tokens="18"), Q], 2,
         ("outside the vocabulary",)),
    Case("state_pending_f32", lambda d, c: ["ask", forged(c, d, "s", {"pending": _tensor(c, "pending").float()}), Q], 2, ("expected I64",)),
    Case("state_pending_2000", lambda d, c: ["ask", forged(c, d, "s", {"pending": torch.ones(2000, dtype=torch.int64)}, tokens="2000"), Q],
         2, ("do not fit",)),
    Case("state_nan", lambda d, c: ["ask", forged(c, d, "s", {"A": _tensor(c, "A").index_fill(0, torch.tensor([0]), float("nan"))}), Q],
         2, ("NaN or infinite",)),
    Case("state_inf_memory", lambda d, c: ["memorize", text_file(d), "--memory", forged(c, d, "s", {"z": torch.full_like(_tensor(c, "z"), float("inf"))}),
                                            "--save", str(d / "out")], 2, ("NaN or infinite",)),
    # -- #33 6: hostile model directories
    Case("model_n_layers_100000", _model_with(n_layers=100000), 2, ("n_layers is 100000",)),
    Case("model_d_ff_4194304", _model_with(d_ff=4194304), 2, ("d_ff is 4194304",)),
    Case("model_n_heads_0", _model_with(n_heads=0), 2, ("n_heads is 0",)),
    Case("model_too_big_for_ram", _model_with(n_layers=4000, d_model=8192, n_heads=8, d_ff=32768), 2, ("this model needs about",)),
    # -- #33 7: output keeps its contract
    Case("names_not_utf8_json", lambda d, c: ["ask", str(_odd_names(d)), Q, "--each", "--json"], 0, answers=3, check=_check_json_lines),
    Case("names_not_utf8_text", lambda d, c: ["ask", str(_odd_names(d)), Q, "--each"], 0, answers=3, check=_check_text_lines),
    Case("stdout_closed", lambda d, c: ["ask", text_file(d), Q], 1, ("standard output is closed",), stdout="closed"),
    Case("huge_question", lambda d, c: ["ask", text_file(d), "--questions", str(write(d, "q.txt", "Where is " + "Mary and " * 120_000 + "?"))],
         2, ("(1,080,010 characters)",), check=lambda d, c, r: len(r.err) < 1500 or pytest.fail(f"{len(r.err)} characters")),
    # -- #33 8: environment
    Case("world_size_abc", lambda d, c: ["ask", text_file(d), Q], 2, ("WORLD_SIZE='abc'",), env={"WORLD_SIZE": "abc"}),
    Case("tokenizer_workers_bad", lambda d, c: ["ask", text_file(d), Q], 2, ("LONGQA_TOKENIZER_WORKERS",), env={"LONGQA_TOKENIZER_WORKERS": "-3"}),
    Case("address_space_300mb", lambda d, c: ["ask", text_file(d), Q], 1, ("ulimit -v",), address_space=300 << 20),
    Case("directory_deeper_than_recursion_limit", _deep, 0, answers=1, check=_remove_deep),
]


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
    Case("invalid_utf8", lambda d, c: ["ask", str(write(d, "bad.txt", TEXT.encode() + b"\xff\xfe\xc3(\xa0\xa1 caf\xe9.")), Q], 0, answers=1,
         warns=True, check=lambda d, c, r: _one_warning("6 bytes that are not valid UTF-8 replaced")(d, c, r)),
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
                      "--questions", str(write(d, "q.txt", "".join(f"{q}\n\n" for q in [f"where is mary {'?' * (i % 3)}" for i in range(9_999)]
                                                                     + ["Where is Mary 3?"])))],
        0, answers=10_000, warns=True,  # the last is not a trained form: one warning line says so
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
        lambda d, c: ["memorize", text_file(d), "--memory", state_variant(c, d, "s", format_version="3"), "--save", str(d / "out")],
        2, ("version 3", "reads versions 1, 2"),
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
    Case("save_parent_is_a_file", lambda d, c: ["ask", text_file(d), Q, "--save", str(d / "doc.txt" / "s")], 2, ("is a file, not a directory",)),
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
    Case("corrupt_model_safetensors", _corrupt_model, 2, ("model.safetensors is damaged or truncated",)),
    *NEW_CASES,
]

# Wrappers around the real command for what Popen cannot set up directly.
_CLOSED_STDIN = ["sh", "-c", 'exec "$@" <&-', "sh"]
_CLOSED_STDOUT = ["sh", "-c", 'exec "$@" >&-', "sh"]
_RLIMIT = (
    "import resource, runpy, sys; kind = getattr(resource, sys.argv.pop(1)); n = int(sys.argv.pop(1)); "
    "resource.setrlimit(kind, (n, n)); runpy.run_module('longqa', run_name='__main__', alter_sys=True)"
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
    raw_out: bytes = b""
    seconds: float = 0.0
    args: tuple[str, ...] = ()


def snapshot(root: Path) -> dict[str, object]:
    """Every entry below root (links not followed): bytes of regular files, the kind of the others. Without
    recursion (os.walk recurses on Python 3.11): a case builds a tree deeper than the recursion limit."""
    snap: dict[str, object] = {}
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                rel = os.path.relpath(entry.path, root)
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    snap[rel] = Path(entry.path).read_bytes()
                elif stat.S_ISLNK(st.st_mode):
                    snap[rel] = ("link", os.readlink(entry.path))
                else:
                    snap[rel] = ("node", stat.S_IFMT(st.st_mode))
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
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
        argv = [sys.executable, "-c", _RLIMIT, "RLIMIT_FSIZE", str(case.fsize), *args]
    elif case.address_space is not None:
        argv = [sys.executable, "-c", _RLIMIT, "RLIMIT_AS", str(case.address_space), *args]
    else:
        argv = [sys.executable, "-m", "longqa", *args]
    if case.stdin == "closed":
        argv = _CLOSED_STDIN + argv
    if case.stdout == "closed":
        argv = _CLOSED_STDOUT + argv
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(case.env or {})}
    env.pop("LONGQA_DEBUG", None)
    env.pop("LONGQA_MODEL", None)
    before = snapshot(folder)
    stop = threading.Event()
    feeder = None
    if case.feed_fifo:
        feeder = threading.Thread(target=_feed, args=(folder / case.feed_fifo, stop), daemon=True)
        feeder.start()
    stdin = open(folder / case.stdin[5:], "rb") if case.stdin.startswith("file:") else subprocess.DEVNULL
    p = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=folder)
    started = time.perf_counter()
    try:
        out, err = p.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        err += b"\n(test: killed after 150 s)"
    finally:
        seconds = time.perf_counter() - started
        stop.set()
        if feeder:
            feeder.join(5)
        if stdin is not subprocess.DEVNULL:
            stdin.close()
    return Result(p.returncode, out.decode("utf-8", "replace").splitlines(), err.decode("utf-8", "replace"), before,
                  snapshot(folder), folder, ctx, raw_out=out, seconds=seconds, args=tuple(args))


@pytest.fixture(scope="module")
def results(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Result]]:
    root = tmp_path_factory.mktemp("battery")
    (root / "good.txt").write_text(TEXT, encoding="utf-8")
    assert cli.main(["memorize", str(root / "good.txt"), "--save", str(root / "good.state"), "--model", str(tiny_model), "-q"]) == 0
    ctx = Ctx(tiny_model, (root / "good.state").read_bytes(), root / "cases")
    ctx.root.mkdir()
    # The slowest case first, so that it does not end up alone at the end.
    order = sorted(CASES, key=lambda c: c.id not in ("ten_thousand_questions", "directory_deeper_than_recursion_limit"))
    with ThreadPoolExecutor(WORKERS) as pool:
        done = dict(zip([c.id for c in order], pool.map(lambda c: run_case(c, ctx), order)))
    yield done
    deep = ctx.root / "directory_deeper_than_recursion_limit"
    if (deep / "deep").exists():  # its test failed before its own cleanup: pytest's rmtree would recurse too deep
        _remove_deep(deep, ctx, done["directory_deeper_than_recursion_limit"])


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
            tabs = 1 if "--each" in r.args and "--json" not in r.args else 0  # --each: "name<TAB>answer"
            assert all("\n" not in a and a.count("\t") == tabs for a in r.out[:50])
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
    assert r.raw_out.decode("utf-8")  is not None  # stdout is valid UTF-8 whatever happened
    if case.check:
        case.check(r.folder, r.ctx) if case.check.__code__.co_argcount == 2 else case.check(r.folder, r.ctx, r)


def test_no_temp_files_next_to_dev_full(results: dict[str, Result]) -> None:
    # Where /dev/full itself was used (no mknod), a temp file in /dev would be the leftover.
    assert not list(Path("/dev").glob(".full.*.tmp"))
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)
