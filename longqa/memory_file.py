"""A document's memory, in RAM and on disk (the STATE file of cli.md).

On disk it is one safetensors file (no pickle: loading can never run code) holding A, z and the
tokens of the unfinished last segment, with metadata: format and version, the fingerprint of the model
and tokenizer that wrote it, tokens read, sources, and a checksum of the tensors so that a damaged file
is refused instead of silently giving other answers. Writes go to a temporary file that is renamed into
place, so an interrupted run leaves the old file intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from longqa.errors import RuntimeFailure, StateError
from longqa.model import MemoryState

FORMAT = "longqa-state"
FORMAT_VERSION = 1
_MAX_HEADER = 1 << 20


@dataclass
class Memory:
    """Everything needed to go on reading a document or to answer about it."""

    state: MemoryState  # batch of one
    pending: list[int] = field(default_factory=list)  # tokens of the unfinished last segment
    tokens: int = 0  # tokens read so far, pending included
    sources: list[str] = field(default_factory=list)


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().numpy().tobytes())
    return h.hexdigest()


def _tensors(memory: Memory) -> dict[str, torch.Tensor]:
    return {
        "A": memory.state.A[0].detach().float().cpu().contiguous(),
        "z": memory.state.z[0].detach().float().cpu().contiguous(),
        "pending": torch.tensor(memory.pending, dtype=torch.int64),
    }


def save(path: str | Path, memory: Memory, fingerprint: str) -> None:
    tensors = _tensors(memory)
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model_fingerprint": fingerprint,
        "tokens": str(memory.tokens),
        "sources": json.dumps(memory.sources),
        "checksum": _checksum(tensors),
    }
    write_atomic(path, _canonical(st_save(tensors, metadata=meta)))


def _canonical(blob: bytes) -> bytes:
    """The same safetensors file with its JSON header keys sorted. safetensors writes the metadata in
    (randomised) Rust hash-map order, so the same memory gave different bytes from run to run; offsets
    are relative to the data, which is untouched, and the header stays padded to 8 bytes as written."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    raw = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + blob[8 + n :]


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers see the old file or the new one."""
    path = Path(path)
    if path.is_dir():
        raise StateError(f"cannot write {path}: it is a directory")
    if path.is_symlink():
        # Renaming over a symlink would replace the link by a file; update what it points to instead.
        path = Path(os.path.realpath(path))
    try:
        old_mode: int | None = path.stat().st_mode
    except OSError:
        old_mode = None
    if old_mode is not None and not stat.S_ISREG(old_mode):
        # A device, FIFO or socket (/dev/null, /dev/stdout, a pipe): renaming a temp file over it would
        # replace the node itself (as root, `--save /dev/null` would delete /dev/null). Write through
        # it; there is no old file to protect.
        try:
            with open(path, "wb") as f:
                f.write(data)
        except OSError as e:
            raise RuntimeFailure(f"cannot write {path}: {e.strerror or e}") from None
        return
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
        with os.fdopen(fd, "wb") as f:
            # mkstemp creates 0600: keep the old file's permissions, or give a new one the umask's.
            os.fchmod(f.fileno(), stat.S_IMODE(old_mode) if old_mode is not None else 0o666 & ~_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise RuntimeFailure(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def read_header(path: str | Path) -> dict | None:
    """The safetensors header of a file, or None if it is not a safetensors file at all."""
    try:
        # Only a regular file can be a state. Peeking into a FIFO or `<(cmd)` would swallow the first
        # bytes of the text that the reader opens it for next.
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                return None
            (n,) = struct.unpack("<Q", raw)
            if not 2 <= n <= _MAX_HEADER:
                return None
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return header if isinstance(header, dict) else None


def is_state_file(path: str | Path) -> bool:
    header = read_header(path)
    return header is not None and (header.get("__metadata__") or {}).get("format") == FORMAT


def load(path: str | Path, fingerprint: str) -> Memory:
    """Load a state written by this model and tokenizer, or raise StateError saying why not."""
    header = read_header(path)
    if header is None:
        if Path(path).is_dir():
            raise StateError(f"{path} is a directory, not a longqa state file")
        if not Path(path).exists():
            raise StateError(f"no such state file: {path}")
        raise StateError(f"{path} is not a longqa state file")
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise StateError(f"{path} is a safetensors file but not a longqa state")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise StateError(
            f"{path} has state format version {meta.get('format_version')}; this longqa reads version {FORMAT_VERSION}"
        )
    if meta.get("model_fingerprint") != fingerprint:
        raise StateError(f"{path} was written by another model (fingerprint {meta.get('model_fingerprint')}, this model {fingerprint})")
    try:
        tensors = st_load(Path(path).read_bytes())
        ok = set(tensors) == {"A", "z", "pending"} and _checksum(tensors) == meta.get("checksum")
        sources = json.loads(meta.get("sources", "[]"))
        tokens = int(meta.get("tokens", "0"))
    except Exception:  # safetensors raises its own error types for every kind of damage
        ok = False
    if not ok:
        raise StateError(f"{path} is damaged (checksum or layout does not match)")
    return Memory(
        MemoryState(tensors["A"].unsqueeze(0), tensors["z"].unsqueeze(0)),
        tensors["pending"].tolist(),
        tokens,
        sources,
    )
