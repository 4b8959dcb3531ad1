"""STATE files (cli.md, issue #33): exact round trip, atomic writes that leave nothing behind, and every kind
of wrong, damaged or forged file refused with one line before the model sees it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import load, save, save_file

from longqa import memory_file as state
from longqa.errors import InputError, RuntimeFailure, StateError
from longqa.memory_file import Layout, Memory
from longqa.model import MemoryState

FP = "0123456789abcdef"
S = 16  # segment length of the layout below
LAYOUT = Layout(A=(2, 12, 8), z=(2, 12), segment_len=S, vocab_size=100)


def make_memory(seed: int = 0, pending: tuple[int, ...] = (5, 6, 7)) -> Memory:
    g = torch.Generator().manual_seed(seed)
    return Memory(
        MemoryState(torch.randn(1, 2, 12, 8, generator=g), torch.rand(1, 2, 12, generator=g)),
        pending=list(pending),
        tokens=5 * S + len(pending),
        sources=["a.txt", "dir/ü 日本.txt", "-", "bad\udcffname.txt"],  # the last: a file name that is not UTF-8
        mentions={"Mary", "kitchen"},
    )


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "mem.pt"
    state.save(path, make_memory(), FP)
    return path


def test_round_trip_is_exact(saved: Path) -> None:
    mem = make_memory()
    loaded = state.load(saved, FP, LAYOUT)
    assert torch.equal(loaded.state.A, mem.state.A) and torch.equal(loaded.state.z, mem.state.z)
    assert loaded.state.A.dtype == torch.float32
    assert (loaded.pending, loaded.tokens, loaded.sources, loaded.mentions) == (mem.pending, mem.tokens, mem.sources, mem.mentions)
    assert state.is_state_file(saved)
    assert state.decode(saved.read_bytes(), FP, LAYOUT).tokens == mem.tokens  # the same from bytes (stdin)


def test_unknown_mentions_round_trip_as_unknown(tmp_path: Path) -> None:
    mem = make_memory()
    mem.mentions = None
    state.save(tmp_path / "s", mem, FP)
    assert state.load(tmp_path / "s", FP, LAYOUT).mentions is None


def test_empty_pending_round_trip(tmp_path: Path) -> None:
    state.save(tmp_path / "s", make_memory(pending=()), FP)
    assert state.load(tmp_path / "s", FP, LAYOUT).pending == []


def test_same_memory_same_bytes(tmp_path: Path) -> None:
    state.save(tmp_path / "a", make_memory(), FP)
    state.save(tmp_path / "b", make_memory(), FP)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


# ---- atomic writes --------------------------------------------------------------------------------


def test_save_leaves_no_temporary_files_and_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "s.state"
    state.save(path, make_memory(0), FP)
    state.save(path, make_memory(1), FP)
    assert os.listdir(tmp_path) == ["s.state"]
    assert torch.equal(state.load(path, FP).state.A, make_memory(1).state.A)


def test_relative_path_in_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    state.save("rel.state", make_memory(), FP)
    assert os.listdir(tmp_path) == ["rel.state"]


def test_a_name_of_253_bytes_is_saved(tmp_path: Path) -> None:
    """The temporary name has a fixed length: a legal target name never makes an illegal temporary one."""
    name = "m" * 249 + ".pt"
    state.check_writable(tmp_path / name)
    state.save(tmp_path / name, make_memory(), FP)
    assert os.listdir(tmp_path) == [name]
    with pytest.raises(InputError, match="longer than this filesystem allows"):
        state.check_writable(tmp_path / ("m" * 300))


def test_interrupted_save_keeps_the_old_file(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = saved.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state.os, "replace", fail)
    with pytest.raises(RuntimeFailure, match="No space left"):
        state.save(saved, make_memory(1), FP)
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == [saved.name]


def test_stale_temporary_files_are_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "mem.pt"
    prefix = state.temp_prefix(target)
    (tmp_path / f"{prefix}999999-dead.tmp").write_bytes(b"x" * 1000)  # its writer is gone: no lock on it
    (tmp_path / ".mem.pt.abcd1234.tmp").write_bytes(b"old naming")  # before format 2, an old one
    os.utime(tmp_path / ".mem.pt.abcd1234.tmp", (time.time() - 3600,) * 2)
    (tmp_path / ".other.pt.abcd1234.tmp").write_bytes(b"another target's")
    state.save(target, make_memory(), FP)
    assert sorted(os.listdir(tmp_path)) == [".other.pt.abcd1234.tmp", "mem.pt"]


def test_a_live_writers_temporary_file_is_left_alone(tmp_path: Path) -> None:
    """Concurrent writers: a temp file whose writer holds its lock is not another writer's to remove."""
    target = tmp_path / "mem.pt"
    live = tmp_path / f"{state.temp_prefix(target)}1-live.tmp"
    live.write_bytes(b"being written")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)", str(live)],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline() == b"locked\n"
        state.save(target, make_memory(), FP)
        assert live.exists()
    finally:
        holder.kill()
        holder.wait()
    state.save(target, make_memory(), FP)
    assert not live.exists()


_KILL_SCRIPT = """
import os, sys, time
from pathlib import Path
from longqa import memory_file as state
real_fsync = os.fsync
def slow_fsync(fd):  # widen the write window: the temp file is there, the rename not done
    print("in-window", flush=True)
    time.sleep(60)
state.os.fsync = slow_fsync
state.write_atomic(Path(sys.argv[1]), b"new" * 1_000_000)
"""


def test_kill_9_inside_the_write_window_keeps_the_old_file_and_the_next_write_cleans_up(saved: Path) -> None:
    old = saved.read_bytes()
    p = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(saved)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"in-window\n", p.stderr.read()
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
    assert saved.read_bytes() == old
    left = [n for n in os.listdir(saved.parent) if n != saved.name]
    assert len(left) == 1 and left[0].startswith(state.temp_prefix(saved)) and left[0].endswith(".tmp")
    state.save(saved, make_memory(1), FP)
    assert os.listdir(saved.parent) == [saved.name]


def test_sigterm_inside_the_write_window_waits_for_the_rename(tmp_path: Path) -> None:
    script = _KILL_SCRIPT.replace("time.sleep(60)", "os.kill(os.getpid(), 15); time.sleep(0.2); real_fsync(fd)")
    p = subprocess.run([sys.executable, "-c", script, str(tmp_path / "s")], capture_output=True, timeout=60)
    assert p.returncode == -signal.SIGTERM  # no handler installed here: the default action, after the write
    assert os.listdir(tmp_path) == ["s"] and (tmp_path / "s").read_bytes() == b"new" * 1_000_000


@pytest.mark.parametrize(
    "where, error, words",
    [
        ("no/such/s", InputError, "no such directory"),
        ("file.txt/s", InputError, "is a file, not a directory"),
        (".", InputError, "is a directory"),
        ("/sys/longqa-test.state", RuntimeFailure, "Permission denied"),
    ],
)
def test_check_writable_refuses_before_any_reading(tmp_path: Path, where: str, error: type, words: str) -> None:
    (tmp_path / "file.txt").write_text("x")
    path = where if where.startswith("/") else tmp_path / where
    with pytest.raises(error, match=words):
        state.check_writable(path)
    assert sorted(os.listdir(tmp_path)) == ["file.txt"]


def test_save_to_missing_folder_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeFailure, match="cannot .*no/such/s"):
        state.save(tmp_path / "no" / "such" / "s", make_memory(), FP)


def test_save_to_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="directory"):
        state.save(tmp_path, make_memory(), FP)


def test_a_memory_holding_nan_is_not_saved(tmp_path: Path) -> None:
    mem = make_memory()
    mem.state.A[0, 0, 0, 0] = float("nan")
    with pytest.raises(RuntimeFailure, match="NaN"):
        state.save(tmp_path / "s", mem, FP)
    assert os.listdir(tmp_path) == []


# ---- refusals -------------------------------------------------------------------------------------


def test_refuses_a_text_file(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("Mary went to the kitchen.")
    assert not state.is_state_file(tmp_path / "t.txt")
    with pytest.raises(StateError, match="not a longqa state file"):
        state.load(tmp_path / "t.txt", FP)


def test_refuses_a_safetensors_file_that_is_not_a_state(tmp_path: Path) -> None:
    save_file({"weight": torch.zeros(3)}, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    assert not state.is_state_file(tmp_path / "model.safetensors")
    with pytest.raises(StateError, match="not a longqa state"):
        state.load(tmp_path / "model.safetensors", FP)


def test_refuses_another_models_state(saved: Path) -> None:
    with pytest.raises(StateError, match="another model"):
        state.load(saved, "fedcba9876543210")
    with pytest.raises(StateError, match="another model"):
        state.check_header(saved, "fedcba9876543210")


def test_refuses_a_future_format_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "FORMAT_VERSION", 3)
    state.save(tmp_path / "future", make_memory(), FP)
    monkeypatch.undo()
    assert state.is_state_file(tmp_path / "future")
    with pytest.raises(StateError, match="format version 3; this longqa reads versions 1, 2"):
        state.check_header(tmp_path / "future", FP)


def test_an_unreadable_state_is_a_permission_error_not_a_wrong_file(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def denied(path, *args, **kwargs):
        if str(path) == str(saved):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(state.os, "open", denied)
    with pytest.raises(RuntimeFailure, match="permission denied"):
        state.load(saved, FP)


def _data_offset(path: Path) -> int:
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    return 8 + n


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_refuses_a_bit_flip_in_the_tensors(saved: Path, where: str) -> None:
    data = bytearray(saved.read_bytes())
    start = _data_offset(saved)
    i = {"first": start, "middle": (start + len(data)) // 2, "last": len(data) - 1}[where]
    data[i] ^= 0x04
    saved.write_bytes(bytes(data))
    with pytest.raises(StateError, match="checksum mismatch"):
        state.load(saved, FP)


@pytest.mark.parametrize("keep", [0, 4, 8, 40, "header", "half", -1])
def test_refuses_a_truncated_file(saved: Path, keep) -> None:
    data = saved.read_bytes()
    n = {"header": _data_offset(saved), "half": len(data) // 2}.get(keep, keep)
    saved.write_bytes(data[:n])
    with pytest.raises(StateError):
        state.load(saved, FP)


def test_refuses_an_extended_file(saved: Path) -> None:
    saved.write_bytes(saved.read_bytes() + b"\0" * 8)
    with pytest.raises(StateError, match="truncated or extended"):
        state.load(saved, FP)


def test_refuses_a_directory(tmp_path: Path) -> None:
    assert not state.is_state_file(tmp_path)
    with pytest.raises(StateError, match="directory"):
        state.load(tmp_path, FP)


def test_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no such state file"):
        state.load(tmp_path / "missing", FP)


def test_refuses_a_huge_header_length(tmp_path: Path) -> None:
    (tmp_path / "h").write_bytes(struct.pack("<Q", 1 << 62) + b"{}")
    with pytest.raises(StateError, match="not a longqa state file"):
        state.load(tmp_path / "h", FP)


def test_state_errors_exit_with_code_2() -> None:
    assert StateError("x").exit_code == 2
    assert RuntimeFailure("x").exit_code == 1


# ---- forged states: every field checked, with or without a valid checksum -------------------------


def _parts(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return load(data), json.loads(data[8 : 8 + n])["__metadata__"]


def forge(good: bytes, tensors: dict | None = None, resign: bool = True, **meta: str) -> bytes:
    """The good state with tensors and metadata replaced; with resign, a checksum that matches the forgery
    (SHA-256 is no signature: anyone can compute it, so every field must also be checked on its own)."""
    (n,) = struct.unpack("<Q", good[:8])
    old_meta = json.loads(good[8 : 8 + n])["__metadata__"]
    t = {**load(good), **(tensors or {})}
    m = {**old_meta, **meta}
    m = {k: v for k, v in m.items() if v is not None}
    if resign:
        described = {k: ({torch.float32: "F32", torch.int64: "I64"}.get(v.dtype, str(v.dtype)), list(v.shape),
                         v.contiguous().numpy().tobytes()) for k, v in t.items()}
        m["checksum"] = state._checksum(m, described)
    return save(t, metadata=m)


def _good_bytes() -> bytes:
    mem = make_memory()
    return state.encode(mem, FP)


A = make_memory().state.A[0]
FORGERIES = {
    # metadata (issue #33, 2): unsigned changes, and signed ones that break a rule
    "tokens_plus_1000_unsigned": ({}, False, {"tokens": str(5 * S + 3 + 1000)}, "checksum mismatch"),
    "sources_changed_unsigned": ({}, False, {"sources": '["evil.txt"]'}, "checksum mismatch"),
    "mentions_changed_unsigned": ({}, False, {"mentions": '["Mary","Fred"]'}, "checksum mismatch"),
    "tokens_negative": ({}, True, {"tokens": "-1"}, "not a count"),
    "tokens_1e30": ({}, True, {"tokens": "1e30"}, "not a count"),
    "tokens_huge": ({}, True, {"tokens": str(10**30)}, "not a count"),
    "tokens_off_segments": ({}, True, {"tokens": str(5 * S + 4)}, "do not fit"),
    "tokens_below_pending": ({}, True, {"tokens": "2"}, "pending tokens but 2 tokens read"),
    "sources_dict": ({}, True, {"sources": '{"a": 1}'}, "sources is not a list"),
    "sources_int": ({}, True, {"sources": "7"}, "sources is not a list"),
    "sources_not_json": ({}, True, {"sources": "[oops"}, "not JSON"),
    "mentions_unknown_name": ({}, True, {"mentions": '["Zeus"]'}, "mentions is not a list"),
    "extra_field": ({}, True, {"comment": "hi"}, "metadata fields"),
    "missing_field": ({}, True, {"tokens": None}, "metadata fields"),
    # tensors (issue #33, 3 and 4)
    "A_half_columns": ({"A": A[:, :, :4].contiguous()}, True, {}, "this model's are"),
    "A_f64": ({"A": A.double()}, True, {}, "A is 'F64', expected F32"),
    "pending_f32": ({"pending": torch.tensor([5.0, 6.0, 7.0])}, True, {}, "pending is 'F32', expected I64"),
    "pending_1e9": ({"pending": torch.tensor([5, 6, 10**9])}, True, {}, "outside the vocabulary"),
    "pending_minus_1": ({"pending": torch.tensor([5, 6, -1])}, True, {}, "outside the vocabulary"),
    "pending_2000": ({"pending": torch.ones(2000, dtype=torch.int64)}, True, {"tokens": str(2000)}, "do not fit"),
    "A_nan": ({"A": A.clone().index_fill_(0, torch.tensor([0]), float("nan"))}, True, {}, "NaN or infinite"),
    "z_inf": ({"z": torch.full((2, 12), float("inf"))}, True, {}, "NaN or infinite"),
    "extra_tensor": ({"B": torch.zeros(2)}, True, {}, "expected A, z and pending"),
    "z_wrong_rank": ({"z": torch.zeros(2, 12, 1)}, True, {}, "do not fit together"),
}


@pytest.mark.parametrize("name", list(FORGERIES))
def test_forged_states_are_refused_with_a_reason(tmp_path: Path, name: str) -> None:
    tensors, resign, meta, words = FORGERIES[name]
    (tmp_path / "s").write_bytes(forge(_good_bytes(), tensors, resign, **meta))
    with pytest.raises(StateError) as e:
        state.load(tmp_path / "s", FP, LAYOUT)
    assert words in str(e.value) and len(str(e.value).splitlines()) == 1


def test_a_forged_but_consistent_token_count_loads(tmp_path: Path) -> None:
    (tmp_path / "s").write_bytes(forge(_good_bytes(), tokens=str(50 * S + 3)))
    assert state.load(tmp_path / "s", FP, LAYOUT).tokens == 50 * S + 3


def _v1_bytes(mem: Memory, **meta: str) -> bytes:
    """A state as format 1 wrote it: the checksum over the tensors only, no mentions."""
    tensors = state._tensors(mem)
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().numpy().tobytes())
    m = {"format": "longqa-state", "format_version": "1", "model_fingerprint": FP, "tokens": str(mem.tokens),
         "sources": json.dumps(mem.sources), "checksum": h.hexdigest(), **meta}
    return save(tensors, metadata=m)


def test_format_1_states_are_still_read_with_every_field_checked(tmp_path: Path) -> None:
    mem = make_memory()
    mem.sources = ["a.txt"]
    (tmp_path / "v1").write_bytes(_v1_bytes(mem))
    loaded = state.load(tmp_path / "v1", FP, LAYOUT)
    assert torch.equal(loaded.state.A, mem.state.A) and loaded.tokens == mem.tokens and loaded.mentions is None
    for meta, words in [({"tokens": "-5"}, "not a count"), ({"sources": "{}"}, "not a list"), ({"tokens": "7"}, "do not fit")]:
        (tmp_path / "bad").write_bytes(_v1_bytes(mem, **meta))
        with pytest.raises(StateError, match=words):
            state.load(tmp_path / "bad", FP, LAYOUT)


# ---- hypothesis: random metadata and tensor layouts ------------------------------------------------

_values = st.one_of(
    st.text(max_size=12), st.integers(-(10**20), 10**20).map(str), st.sampled_from(["", "[]", "{}", "null", "1e30", "NaN", '["Mary"]']),
)
_dtypes = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64, torch.int32])


@st.composite
def forged_states(draw: st.DrawFn) -> tuple[dict, bool, dict]:
    tensors: dict[str, torch.Tensor] = {}
    for name in draw(st.sets(st.sampled_from(["A", "z", "pending", "x"]), max_size=3)):
        shape = draw(st.lists(st.integers(0, 13), min_size=0, max_size=4))
        t = torch.zeros(shape, dtype=draw(_dtypes))
        if t.numel() and t.is_floating_point():
            t.view(-1)[0] = draw(st.sampled_from([0.5, float("nan"), float("inf"), -1e30]))
        elif t.numel():
            t.view(-1)[0] = draw(st.integers(-(2**31), 2**31 - 1))
        tensors[name] = t
    meta = draw(st.dictionaries(st.sampled_from(["tokens", "sources", "mentions", "format_version", "model_fingerprint", "extra"]),
                                st.one_of(_values, st.none()), max_size=4))
    return tensors, draw(st.booleans()), meta


@pytest.fixture(scope="module")
def tiny_engine(tiny_model: Path):
    from longqa.engine import Engine

    torch.set_num_threads(1)
    return Engine(tiny_model, "cpu")


@pytest.fixture(scope="module")
def genuine(tiny_engine, tmp_path_factory: pytest.TempPathFactory):
    from longqa.input.reader import Document

    d = tmp_path_factory.mktemp("genuine")
    (d / "t.txt").write_text("Mary went to the kitchen. John went to the garden. " * 9 + "Mary moved to the office.")
    mem = tiny_engine.new_memory()
    mem.mentions = set()
    tiny_engine.read([mem], [[Document(str(d / "t.txt"), None)]])
    mem.mentions = {"Mary", "John", "kitchen", "garden", "office"}
    data = state.encode(mem, tiny_engine.fingerprint)
    answers = tiny_engine.answer([mem], ["Where is Mary?", "Where is John?"])
    return data, answers, Layout.of(tiny_engine)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(forgery=forged_states())
@example(forgery=({}, True, {}))  # the genuine state, signed again: it loads
@example(forgery=({}, False, {"tokens": "999"}))
def test_a_forged_state_is_refused_or_answers_exactly_as_the_genuine_one(forgery, genuine, tiny_engine) -> None:
    data, answers, layout = genuine
    tensors, resign, meta = forgery
    forged = forge(data, tensors, resign, **{k: (v if v is not None else None) for k, v in meta.items()})
    try:
        mem = state.decode(forged, tiny_engine.fingerprint, layout)
    except StateError as e:
        assert len(str(e).splitlines()) == 1 and len(str(e)) < 400
        return
    assert tiny_engine.answer([mem], ["Where is Mary?", "Where is John?"]) == answers
