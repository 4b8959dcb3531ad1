"""Robustness: interrupts never damage a STATE, random bytes never crash the reader or the state loader,
runs are deterministic, nothing can unpickle, and reading a huge one-line file stays in bounded RAM.

(Streaming tokenisation == whole-text tokenisation on random Unicode is already fuzzed in test_text.py.)
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from conftest import babi_text
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import longqa
from longqa import cli
from longqa import memory_file as state
from longqa.errors import LongQAError, StateError
from longqa.input.reader import documents, read_chunks
from longqa.input.text import encode_stream, load_tokenizer

torch.set_num_threads(1)

QS = ["Where is Mary?", "Where is Daniel?"]


def env() -> dict[str, str]:
    e = {**os.environ, "OMP_NUM_THREADS": "1"}
    e.pop("LONGQA_DEBUG", None)
    e.pop("LONGQA_MODEL", None)
    return e


def longqa_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "longqa", *map(str, args)]


# ---- interrupts -----------------------------------------------------------------------------------


def _reading_started(pid: int, path: Path) -> bool:
    """True once the process holds `path` open at an offset past the 8-byte state-file sniff."""
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                pos = int(re.search(r"pos:\s*(\d+)", Path(f"/proc/{pid}/fdinfo/{fd}").read_text()).group(1))
                if pos > 8:
                    return True
    except (OSError, AttributeError):
        pass
    return False


@pytest.fixture(scope="module")
def interrupt_setup(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("interrupt")
    # ~1 MB: about 25 s of reading with the tiny model on one thread, against ~4 s of imports, so the
    # signal (0.5 s after reading starts) lands far from the end; the test stops the run early anyway.
    (d / "big.txt").write_text((babi_text(2000, seed=7) + "\n") * 18, encoding="utf-8")
    (d / "small.txt").write_text(babi_text(20, seed=8), encoding="utf-8")
    return d, tiny_model


@pytest.mark.parametrize(
    "sig, code, message",
    [
        (signal.SIGINT, 130, "longqa: interrupted"),
        # SIGTERM (kill, systemd, docker stop) is turned into a clean exit too: 128 + 15 = 143, the
        # code a shell reports for a process killed by SIGTERM, after the same cleanup as Ctrl-C.
        (signal.SIGTERM, 143, "longqa: terminated"),
    ],
    ids=["SIGINT", "SIGTERM"],
)
def test_interrupt_while_reading_keeps_the_old_state(interrupt_setup, tmp_path: Path, sig: int, code: int, message: str) -> None:
    src, model = interrupt_setup
    folder = tmp_path / "states"
    folder.mkdir()
    s = folder / "mem.state"
    assert cli.main(["memorize", str(src / "small.txt"), "--save", str(s), "--model", str(model), "-q"]) == 0
    old = s.read_bytes()
    p = subprocess.Popen(
        longqa_cmd("memorize", src / "big.txt", "--save", s, "--model", model, "-q"),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(),
        # A test run started in the background (`cmd &` in a script) inherits SIGINT ignored, and so would
        # this child: like any Unix program, longqa then rightly ignores Ctrl-C. Give it a terminal's default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not _reading_started(p.pid, src / "big.txt"):
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "the command never started reading"
        time.sleep(0.05)
    time.sleep(0.5)  # well inside the model's reading loop
    assert p.poll() is None, "finished before it could be interrupted: make big.txt bigger"
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    assert p.returncode == code, err.decode()
    assert out == b"" and err.decode().strip() == message
    assert s.read_bytes() == old, "an interrupted run changed the saved state"
    assert sorted(x.name for x in folder.iterdir()) == ["mem.state"], "temporary files left behind"


# ---- fuzzing --------------------------------------------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_PREFIXES = [b"", b"\x1f\x8b", b"\x1f\x8b\x08\x00", b"BZh9", b"BZh91AY&SY", b"\xfd7zXZ\x00", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"]
_fuzz_bytes = st.builds(lambda p, b: p + b, st.sampled_from(_PREFIXES), st.binary(max_size=3000))


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    return load_tokenizer(tiny_model / "tokenizer.json")


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(data=_fuzz_bytes)
@example(data=b"\x1f\x8b\x08\x00" + b"\x00" * 6)  # a gzip header and nothing else
@example(data=b"\xff\xfe\x00")  # UTF-16 BOM and half a code unit
def test_random_bytes_through_the_reader(data: bytes, fuzz_dir: Path, tokenizer) -> None:
    path = fuzz_dir / "doc.gz"
    path.write_bytes(data)
    try:
        for doc in documents(str(path), lambda m: None):
            ids = [i for part in encode_stream(tokenizer, read_chunks(doc)) for i in part]
            assert all(isinstance(i, int) and i >= 0 for i in ids)
    except LongQAError:
        pass  # a clean, explained refusal (damaged archive...) is fine; anything else is a bug


_GOOD: dict[str, bytes] = {}


def _good_state() -> bytes:
    if not _GOOD:
        from longqa.model import MemoryState

        g = torch.Generator().manual_seed(0)
        mem = state.Memory(MemoryState(torch.randn(1, 2, 4, 8, generator=g), torch.rand(1, 2, 4, generator=g)), [1, 2, 3], 35, ["a.txt"])
        with tempfile.TemporaryDirectory() as d:
            state.save(Path(d) / "s", mem, "f" * 16)
            _GOOD["s"] = (Path(d) / "s").read_bytes()
    return _GOOD["s"]


@st.composite
def _damaged_states(draw: st.DrawFn) -> bytes:
    good = bytearray(_good_state())
    kind = draw(st.sampled_from(["random", "truncate", "flip", "splice"]))
    if kind == "random":
        return draw(_fuzz_bytes)
    if kind == "truncate":
        return bytes(good[: draw(st.integers(0, len(good) - 1))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            good[draw(st.integers(0, len(good) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(good)
    i = draw(st.integers(0, len(good)))
    return bytes(good[:i]) + draw(st.binary(min_size=1, max_size=64)) + bytes(good[i:])


@FUZZ
@given(data=_damaged_states())
def test_random_bytes_through_state_load(data: bytes, fuzz_dir: Path) -> None:
    path = fuzz_dir / "mem.pt"
    path.write_bytes(data)
    good = state.load(_write(fuzz_dir / "good", _good_state()), "f" * 16)
    try:
        mem = state.load(path, "f" * 16)
    except StateError:
        return
    # Loading can only succeed when the damage missed everything the checksum covers (format 2: every
    # metadata field and tensor), e.g. the header's padding; then the memory must be exactly the original one.
    assert torch.equal(mem.state.A, good.state.A) and torch.equal(mem.state.z, good.state.z)
    assert mem.pending == good.pending


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---- determinism ----------------------------------------------------------------------------------


def test_two_runs_give_identical_answers_and_states(tiny_model: Path, tmp_path: Path) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text(babi_text(60, seed=11), encoding="utf-8")
    procs = [
        subprocess.Popen(
            longqa_cmd("ask", doc, *QS, "--json", "--save", tmp_path / f"s{i}", "--model", tiny_model, "-q"),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(),
        )
        for i in (1, 2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()
    runs = [[json.loads(line) for line in out.decode().splitlines()] for out, _ in outs]
    assert len(runs[0]) == len(QS)
    assert all(isinstance(o.pop("seconds"), (int, float)) for run in runs for o in run)
    assert runs[0] == runs[1]
    assert (tmp_path / "s1").read_bytes() == (tmp_path / "s2").read_bytes()


# ---- security -------------------------------------------------------------------------------------


def test_no_module_can_unpickle() -> None:
    pkg = Path(longqa.__file__).parent
    bad = re.compile(r"\btorch\.load\s*\(|\bpickle\.loads?\s*\(|\bdill\b|\bjoblib\.load\b|weights_only\s*=\s*False")
    hits = [f"{f.name}:{n}: {line.strip()}" for f in sorted(pkg.rglob("*.py"))
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1) if bad.search(line)]
    assert hits == []


def test_pickle_payload_is_armed_but_never_run(tiny_model: Path, tmp_path: Path) -> None:
    """The crafted mem.pt does run code when unpickled (so the CLI tests of it mean something), and
    `--memory mem.pt` refuses it without running it (the battery does the same through the CLI)."""
    from test_battery import Evil

    payload = __import__("pickle").dumps(Evil(tmp_path / "PWNED"))
    (tmp_path / "mem.pt").write_bytes(payload)
    with pytest.raises(StateError, match="not a longqa state"):
        state.load(tmp_path / "mem.pt", "f" * 16)
    assert not (tmp_path / "PWNED").exists()
    __import__("pickle").loads(payload)  # noqa: S301 - the control: this is what must never happen
    assert (tmp_path / "PWNED").is_dir()


# ---- bounded RAM ----------------------------------------------------------------------------------

BIG_MB = 100  # 200 MB took 61 s on the 2-core dev machine (peak RSS 361 MB)
RSS_LIMIT_MB = 600

_RSS_SCRIPT = textwrap.dedent(
    """
    import re, resource, sys, time
    from longqa.input.reader import documents, read_chunks
    from longqa.input.text import encode_stream
    from longqa.input.text import load_tokenizer

    def hwm_mb():  # this image's peak RSS; ru_maxrss also counts the forked parent's before exec
        return int(re.search(r"VmHWM:\\s*(\\d+)", open("/proc/self/status").read()).group(1)) // 1024

    tok = load_tokenizer(sys.argv[2])
    start = hwm_mb()
    t = time.perf_counter()
    n = 0
    for doc in documents(sys.argv[1], print):
        for ids in encode_stream(tok, read_chunks(doc)):
            n += len(ids)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux
    print(n, start, hwm_mb(), maxrss, round(time.perf_counter() - t, 1))
    """
)


@pytest.mark.slow
def test_reading_a_huge_one_line_file_stays_in_bounded_ram(tiny_model: Path, tmp_path: Path) -> None:
    big = tmp_path / "one-line.txt"
    block = b"abc " * (1 << 18)  # 1 MiB of words, no newline, no sentence end
    with open(big, "wb") as f:
        for _ in range(BIG_MB):
            f.write(block)
    p = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(big), str(tiny_model / "tokenizer.json")],
        capture_output=True, env=env(), timeout=600,
    )
    assert p.returncode == 0, p.stderr.decode()
    tokens, start_mb, peak_mb, maxrss_mb, seconds = p.stdout.decode().split()
    print(f"\n{BIG_MB} MB one-line file: {int(tokens):,} tokens in {seconds} s; peak RSS {peak_mb} MB "
          f"(VmHWM; {start_mb} MB before reading; ru_maxrss {maxrss_mb} MB includes the forked parent)")
    assert int(tokens) >= BIG_MB * (1 << 18)  # every word read
    # VmHWM is the child's own peak; ru_maxrss also counts the pytest parent it was forked from, which
    # grows with whatever ran before in the suite, so it is printed but not judged.
    assert int(peak_mb) < RSS_LIMIT_MB


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_shutdown_is_ignored(sig: int) -> None:
    """A signal that lands after the command finished (its state, if any, already saved) must not print a
    traceback from an exit handler or end the process as killed: the command's own exit code stands."""
    code = (
        "import atexit, os, sys; from longqa.launch import entry; "
        f"atexit.register(lambda: os.kill(os.getpid(), {int(sig)})); sys.argv = ['longqa', '--version']; sys.exit(entry())"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env(), timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode().startswith("longqa") and p.stderr == b""


# ---- signals at any moment (issue #33, 7 and 8) -------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.03, 0.06, 0.1, 0.2, 0.4, 0.8])
def test_sigint_at_any_moment_of_start_up_is_one_line_and_exit_130(interrupt_setup, delay: float) -> None:
    """Handlers are installed before anything slow (longqa.launch): Ctrl-C while Python still imports
    typer or torch is one line and 130, never a KeyboardInterrupt traceback. (What no Python code can
    cover: the interpreter's own start, the first ~10-20 ms on the dev machine, before any module of ours
    runs; a Ctrl-C there still gets Python's default.)"""
    src, model = interrupt_setup
    p = subprocess.Popen(longqa_cmd("ask", src / "small.txt", QS[0], "--model", model, "-q"), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(),
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert "Traceback" not in err.decode(), err.decode()
    assert (p.returncode, out, err) == (130, b"", b"longqa: interrupted\n")


_SLOW_LOAD = """
import sys, time
from longqa import model
real = model.ARMTModel.from_pretrained.__func__
def slow(cls, folder):
    print("loading", file=sys.stderr, flush=True)
    time.sleep(30)
    return real(cls, folder)
model.ARMTModel.from_pretrained = classmethod(slow)
from longqa.launch import entry
sys.argv = ["longqa", *sys.argv[1:]]
sys.exit(entry())
"""


@pytest.mark.slow
def test_sigterm_while_the_model_loads_is_143(interrupt_setup) -> None:
    """The loader turns any Exception into 'cannot load model' (exit 2): SIGTERM must not be one."""
    src, model = interrupt_setup
    p = subprocess.Popen([sys.executable, "-c", _SLOW_LOAD, "ask", str(src / "small.txt"), QS[0], "--model", str(model), "-q"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    assert p.stderr.readline() == b"loading\n"
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert (p.returncode, out, err) == (143, b"", b"longqa: terminated\n")


@pytest.mark.slow
def test_sigterm_while_answers_are_printed_never_cuts_a_line(interrupt_setup, tmp_path: Path) -> None:
    """60,001 answer lines fill the pipe, so the command blocks in a write when SIGTERM comes: the line
    being written is finished, then it exits 143. Every line on stdout is whole."""
    src, model = interrupt_setup
    (tmp_path / "q.txt").write_text("What is it?\n" * 60_000 + "Where is Mary?\n")
    p = subprocess.Popen(longqa_cmd("ask", src / "small.txt", "--questions", tmp_path / "q.txt", "--model", model, "-q"),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    first = p.stdout.read(2)  # answers are coming: the pipe (64 KB) is full soon after
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    out = first + out
    assert p.returncode == 143, err.decode()
    assert err.decode().splitlines()[-1] == "longqa: terminated"
    assert out.endswith(b"\n") and set(out.decode().splitlines()) == {"?"}
    assert 0 < out.count(b"\n") < 60_001


def _unreadable_for_root() -> str | None:
    """A regular file that even root may not open for reading (write-only /proc/sys entries)."""
    for p in ("/proc/sys/vm/compact_memory", "/proc/sys/vm/drop_caches"):
        try:
            open(p, "rb").close()
        except PermissionError:
            return p
        except OSError:
            continue
    return None


@pytest.mark.slow
def test_an_unreadable_state_is_a_permission_error(tiny_model: Path, tmp_path: Path) -> None:
    """Mode 000 as a normal user: exit 1, permission denied (it was 'not a longqa state file', exit 2). Root
    reads any mode, so as root a write-only /proc/sys file stands in for it."""
    (tmp_path / "doc.txt").write_text(babi_text(20, seed=3))
    if os.geteuid() == 0:
        unreadable = _unreadable_for_root()
        if unreadable is None:
            pytest.skip("no file here that root cannot read")
    else:
        unreadable = str(tmp_path / "mem.pt")
        assert cli.main(["memorize", str(tmp_path / "doc.txt"), "--save", unreadable, "--model", str(tiny_model), "-q"]) == 0
        os.chmod(unreadable, 0)
    for args in (["ask", unreadable, QS[0]], ["ask", tmp_path / "doc.txt", QS[0], "--memory", unreadable]):
        p = subprocess.run(longqa_cmd(*args, "--model", tiny_model), capture_output=True, env=env(), timeout=120)
        assert (p.returncode, p.stdout, p.stderr.decode()) == (1, b"", f"longqa: error: permission denied: '{unreadable}'\n")


@pytest.mark.slow
def test_progress_on_a_terminal_counts_tokens_with_an_eta(interrupt_setup) -> None:
    import pty

    src, model = interrupt_setup
    master, slave = pty.openpty()
    p = subprocess.Popen(longqa_cmd("ask", src / "big.txt", QS[0], "--model", model), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=slave, env={**env(), "COLUMNS": "200"})
    os.close(slave)
    seen = ""
    frame = re.compile(r"reading \S+\s+(\d+)%\s+([\d,]+) of ~([\d,]+) tokens\s+([\d,]+) tokens/s\s+[\d:]+ ETA\s+(\d+:\d\d:\d\d)")
    deadline = time.monotonic() + 90
    while not (m := ([None, *frame.finditer(seen)][-1])) or m.group(1) == "0":  # the latest frame
        assert time.monotonic() < deadline and p.poll() is None, seen[-500:]
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the command exited and closed the terminal
            chunk = b""
        assert chunk, f"exit {p.wait()}: {seen[-500:]}"
        seen += re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", chunk.decode("utf-8", "replace"))
    p.send_signal(signal.SIGINT)  # a frame with real figures seen: no need to read the whole megabyte
    p.communicate(timeout=60)
    os.close(master)
    percent, done, total, rate = (int(g.replace(",", "")) for g in m.groups()[:4])
    # The estimate: ~1 MB of bAbI text is ~250K tokens; the ETA is what is left at the rate so far.
    assert 0 < percent < 100 and 0 < done < total and 150_000 < total < 400_000 and rate > 0, m.group(0)
