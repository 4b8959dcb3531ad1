"""STATE files (cli.md): exact round trip, atomic writes, and every kind of wrong file refused."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from safetensors.torch import save_file

from longqa import memory_file as state
from longqa.errors import RuntimeFailure, StateError
from longqa.memory_file import Memory
from longqa.model import MemoryState

FP = "0123456789abcdef"


def make_memory(seed: int = 0) -> Memory:
    g = torch.Generator().manual_seed(seed)
    return Memory(
        MemoryState(torch.randn(1, 2, 12, 8, generator=g), torch.rand(1, 2, 12, generator=g)),
        pending=[5, 6, 7],
        tokens=1234,
        sources=["a.txt", "dir/ü 日本.txt", "-"],
    )


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "mem.pt"
    state.save(path, make_memory(), FP)
    return path


def test_round_trip_is_exact(saved: Path) -> None:
    mem = make_memory()
    loaded = state.load(saved, FP)
    assert torch.equal(loaded.state.A, mem.state.A) and torch.equal(loaded.state.z, mem.state.z)
    assert loaded.state.A.dtype == torch.float32
    assert loaded.pending == mem.pending
    assert loaded.tokens == mem.tokens
    assert loaded.sources == mem.sources
    assert state.is_state_file(saved)


def test_empty_pending_round_trip(tmp_path: Path) -> None:
    mem = make_memory()
    mem.pending = []
    state.save(tmp_path / "s", mem, FP)
    assert state.load(tmp_path / "s", FP).pending == []


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


def test_interrupted_save_keeps_the_old_file(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = saved.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state.os, "replace", fail)
    with pytest.raises(RuntimeFailure, match="No space left"):
        state.save(saved, make_memory(1), FP)
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == [saved.name]


def test_save_to_missing_folder_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeFailure, match="cannot .*no/such/s"):
        state.save(tmp_path / "no" / "such" / "s", make_memory(), FP)


def test_save_to_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="directory"):
        state.save(tmp_path, make_memory(), FP)


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


def test_refuses_a_future_format_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "FORMAT_VERSION", state.FORMAT_VERSION + 1)
    state.save(tmp_path / "future", make_memory(), FP)
    monkeypatch.undo()
    assert state.is_state_file(tmp_path / "future")
    with pytest.raises(StateError, match="format version"):
        state.load(tmp_path / "future", FP)


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
    with pytest.raises(StateError, match="damaged"):
        state.load(saved, FP)


def test_refuses_edited_metadata(saved: Path) -> None:
    data = saved.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header["__metadata__"]["checksum"] = "0" * 64
    raw = json.dumps(header).encode()
    saved.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    with pytest.raises(StateError, match="damaged"):
        state.load(saved, FP)


@pytest.mark.parametrize("keep", [0, 4, 8, 40, "header", "half", -1])
def test_refuses_a_truncated_file(saved: Path, keep) -> None:
    data = saved.read_bytes()
    n = {"header": _data_offset(saved), "half": len(data) // 2}.get(keep, keep)
    saved.write_bytes(data[:n])
    with pytest.raises(StateError):
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
