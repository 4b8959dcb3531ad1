"""A document's memory, in RAM and on disk (the STATE file of cli.md).

On disk it is one safetensors file (no pickle: loading can never run code) holding A, z and the tokens of
the unfinished last segment, with metadata: format and version, the fingerprint of the model and tokenizer
that wrote it, tokens read, sources, the world's names the text mentions, and a checksum.

Format 2 (written now): the checksum (SHA-256) covers every metadata field and every tensor's name, dtype,
shape and bytes, so no part of a state can change unnoticed. Loading checks everything before the model
sees it (load): the file's size and header, every field's type and range, every tensor's name, dtype and
shape against the model, that the token count agrees with the pending tokens, pending ids inside the
vocabulary, and that A and z are finite. Anything else is refused with one line that says what is wrong.
Format 1 (its checksum covered the tensors only) is still read, with the same checks of everything else.

Writes (write_atomic) go to a temporary file that is renamed into place, so an interrupted run leaves the
old file intact. Its name has a fixed length whatever the target's, and the writer holds a lock on it: a
temporary file left by a killed writer (kill -9) is found and removed by the next write to the same target.

Torch is imported only where tensors are made: the CLI checks a state's header before it loads torch.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import re
import secrets
import stat
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from longqa.errors import InputError, RuntimeFailure, StateError, printable, show
from longqa.launch import signals_held
from longqa.questions import ENTITIES

if TYPE_CHECKING:
    import torch

    from longqa.model import MemoryState

FORMAT = "longqa-state"
FORMAT_VERSION = 2
READABLE_VERSIONS = ("1", "2")
_MAX_HEADER = 64 << 20  # the header holds the sources' names: a memory of a million files still fits
_MAX_TOKENS = 1 << 53  # a count that a float (and JSON everywhere) holds exactly; ~25 years of reading at 10M/s
_TENSORS = {"A": "F32", "z": "F32", "pending": "I64"}
_DTYPE_SIZE = {"F32": 4, "I64": 8}
_META_V1 = {"format", "format_version", "model_fingerprint", "tokens", "sources", "checksum"}
_META_V2 = _META_V1 | {"mentions"}
_HEX = re.compile(r"[0-9a-f]+")


@dataclass
class Memory:
    """Everything needed to go on reading a document or to answer about it."""

    state: MemoryState  # batch of one
    pending: list[int] = field(default_factory=list)  # tokens of the unfinished last segment
    tokens: int = 0  # tokens read so far, pending included
    sources: list[str] = field(default_factory=list)
    # The world's names (questions.ENTITIES) the text mentions; None: not known (a library caller's memory,
    # a format-1 state), and then a question is never refused for naming someone the text does not mention.
    mentions: set[str] | None = None


@dataclass(frozen=True)
class Layout:
    """What a state must look like to be read by a model: A's and z's shapes without the batch dimension,
    the segment length (pending tokens are fewer) and the vocabulary (pending ids are inside it)."""

    A: tuple[int, ...]
    z: tuple[int, ...]
    segment_len: int
    vocab_size: int

    @classmethod
    def of(cls, engine) -> Layout:
        fresh = engine.new_memory().state
        return cls(tuple(fresh.A.shape[1:]), tuple(fresh.z.shape[1:]), engine.config.segment_len, engine.config.vocab_size)

    def max_bytes(self) -> int:
        """The largest state file of this layout (header at its largest)."""
        return 8 + _MAX_HEADER + 4 * (math.prod(self.A) + math.prod(self.z)) + 8 * self.segment_len


# ---- writing ------------------------------------------------------------------------------------


def _tensors(memory: Memory) -> dict[str, torch.Tensor]:
    import torch

    return {
        "A": memory.state.A[0].detach().float().cpu().contiguous(),
        "z": memory.state.z[0].detach().float().cpu().contiguous(),
        "pending": torch.tensor(memory.pending, dtype=torch.int64),
    }


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().numpy().tobytes()


def _checksum(meta: dict[str, str], tensors: dict[str, tuple[str, list[int], bytes]]) -> str:
    """Format 2: SHA-256 of every metadata field but the checksum, then of every tensor (name, dtype, shape,
    bytes), in name order."""
    h = hashlib.sha256()
    fields = {k: v for k, v in meta.items() if k != "checksum"}
    h.update(json.dumps(fields, sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        h.update(json.dumps([name, dtype, shape]).encode())
        h.update(struct.pack("<Q", len(data)))
        h.update(data)
    return h.hexdigest()


def _checksum_v1(tensors: dict[str, tuple[str, list[int], bytes]]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name][2])
    return h.hexdigest()


def encode(memory: Memory, fingerprint: str) -> bytes:
    """The state file's bytes. RuntimeFailure if the memory holds NaN or inf: no reader would accept it."""
    import torch
    from safetensors.torch import save as st_save

    tensors = _tensors(memory)
    if not (torch.isfinite(tensors["A"]).all() and torch.isfinite(tensors["z"]).all()):
        raise RuntimeFailure("the memory holds NaN or infinite values after reading (the model diverged); it was not saved")
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model_fingerprint": fingerprint,
        "tokens": str(memory.tokens),
        # ASCII JSON: a file name that is not UTF-8 (its bytes as surrogates) round-trips exactly.
        "sources": json.dumps(memory.sources, ensure_ascii=True),
        "mentions": json.dumps(None if memory.mentions is None else sorted(memory.mentions)),
    }
    described = {k: (_TENSORS[k], list(t.shape), _tensor_bytes(t)) for k, t in tensors.items()}
    meta["checksum"] = _checksum(meta, described)
    return _canonical(st_save(tensors, metadata=meta))


def save(path: str | Path, memory: Memory, fingerprint: str) -> None:
    write_atomic(path, encode(memory, fingerprint))


def _canonical(blob: bytes) -> bytes:
    """The same safetensors file with its JSON header keys sorted. safetensors writes the metadata in
    (randomised) Rust hash-map order, so the same memory gave different bytes from run to run; offsets
    are relative to the data, which is untouched, and the header stays padded to 8 bytes as written."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    raw = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + blob[8 + n :]


# ---- atomic writes ------------------------------------------------------------------------------

_LEGACY_AGE = 600  # seconds: a temporary file of the old naming this old has no live writer


def temp_prefix(target: Path) -> str:
    """The name every temporary file of `target` starts with: hidden, and of fixed length, so that a
    target of any legal name (up to NAME_MAX) has a legal temporary name."""
    return f".longqa-{hashlib.sha256(os.fsencode(target.name)).hexdigest()[:16]}-"


def _target(path: Path) -> tuple[Path, int | None]:
    """The file a write to `path` replaces (a symlink's target: renaming over a link would replace the link)
    and its mode, or None if there is none yet (or it cannot be looked at: the write says why)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return path, None
    if not stat.S_ISLNK(mode):
        return path, mode
    path = Path(os.path.realpath(path))
    try:
        return path, os.stat(path).st_mode
    except OSError:
        return path, None


def check_writable(path: str | Path, what: str = "--save") -> None:
    """Fail now, before any reading, if `path` cannot be written: InputError (exit 2) for a path that cannot
    be one (missing folder, a file's "subfolder", a directory, a name too long), RuntimeFailure (exit 1)
    for a folder this process may not write (permission, read-only filesystem). Creates and removes a
    temporary file as the real write will, which also clears those a killed writer left."""
    where = show(path, 200)
    if len(os.fsencode(Path(path).name)) > 255:  # NAME_MAX of every Linux filesystem; checked again below
        raise InputError(f"{what} {where}: the file name is longer than this filesystem allows (255 bytes)")
    target, mode = _target(Path(path))
    if mode is not None and stat.S_ISDIR(mode):
        raise InputError(f"{what} {where} is a directory; give a file name")
    if mode is not None and not stat.S_ISREG(mode):
        if not os.access(target, os.W_OK):
            raise RuntimeFailure(f"cannot write {where}: permission denied")
        return  # a device or FIFO: written through (write_atomic)
    folder = target.parent
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        raise InputError(f"{what} {where}: no such directory {show(folder, 200)}") from None
    except NotADirectoryError:
        raise InputError(f"{what} {where}: a part of {show(folder, 200)} is a file, not a directory") from None
    except OSError as e:
        raise RuntimeFailure(f"cannot write {where}: {e.strerror or e}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{what} {where}: {show(folder, 200)} is a file, not a directory")
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(target.name)) > name_max:
        raise InputError(f"{what} {where}: the file name is longer than this filesystem allows ({name_max} bytes)")
    try:
        fd, tmp = _create_temp(target)
    except OSError as e:
        raise RuntimeFailure(f"cannot write {where}: {e.strerror or e}") from None
    os.unlink(tmp)
    os.close(fd)


def _create_temp(target: Path) -> tuple[int, Path]:
    """A new temporary file beside target, locked by this process for as long as the fd is open."""
    _remove_stale(target)
    for _ in range(100):
        tmp = target.parent / f"{temp_prefix(target)}{os.getpid()}-{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # A cleaner (another process's _remove_stale) may have taken it between open and lock.
            if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                return fd, tmp
        except OSError:
            pass
        os.close(fd)
    raise OSError(errno.EEXIST, "could not create a temporary file")


def _remove_stale(target: Path) -> None:
    """Remove the temporary files of target that no live writer holds (left by a kill -9 or a crash)."""
    prefix = temp_prefix(target)
    legacy = re.compile(re.escape(f".{target.name}.") + r"[a-z0-9_]{8}\.tmp")  # before format 2's naming
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        try:
            if name.startswith(prefix) and name.endswith(".tmp"):
                fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a live writer: BlockingIOError
                    if os.lstat(entry.path).st_ino == os.fstat(fd).st_ino:
                        os.unlink(entry.path)
                finally:
                    os.close(fd)
            elif legacy.fullmatch(name) and time.time() - entry.stat(follow_symlinks=False).st_mtime > _LEGACY_AGE:
                os.unlink(entry.path)
        except OSError:
            continue


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers see the old file or the new one."""
    path = Path(path)
    target, old_mode = _target(path)
    if old_mode is not None and stat.S_ISDIR(old_mode):
        raise StateError(f"cannot write {show(path, 200)}: it is a directory")
    if old_mode is not None and not stat.S_ISREG(old_mode):
        # A device, FIFO or socket (/dev/null, /dev/stdout, a pipe): renaming a temp file over it would
        # replace the node itself (as root, `--save /dev/null` would delete /dev/null). Write through
        # it; there is no old file to protect.
        try:
            with open(target, "wb") as f:
                f.write(data)
        except OSError as e:
            raise RuntimeFailure(f"cannot write {show(path, 200)}: {e.strerror or e}") from None
        return
    with signals_held():
        tmp = None
        fd = -1
        try:
            fd, tmp = _create_temp(target)
            # mkstemp-like 0600: keep the old file's permissions, or give a new one the umask's.
            os.fchmod(fd, stat.S_IMODE(old_mode) if old_mode is not None else 0o666 & ~_umask())
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            os.replace(tmp, target)
            tmp = None
            _fsync_dir(target.parent)
        except OSError as e:
            raise RuntimeFailure(f"cannot write {show(path, 200)}: {e.strerror or e}") from None
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            if fd >= 0:
                os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


# ---- reading ------------------------------------------------------------------------------------


def _header_of(head: bytes) -> tuple[int, dict] | None:
    """(header length, header) of a safetensors file from its first bytes, or None if they are not one."""
    if len(head) < 10:
        return None
    (n,) = struct.unpack("<Q", head[:8])
    if not 2 <= n <= _MAX_HEADER or head[8:9] != b"{" or len(head) < 8 + n:
        return None
    try:
        header = json.loads(head[8 : 8 + n])
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return (n, header) if isinstance(header, dict) else None


def _open_regular(path: str | Path) -> tuple[int, int] | None:
    """(fd, size) of a regular file, None for anything else (a FIFO or `<(cmd)`: peeking into one would
    swallow the first bytes of the text that the reader opens it for next). OSError if it cannot be opened."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        return None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    return fd, os.fstat(fd).st_size


def _read_head(fd: int) -> bytes | None:
    raw = os.pread(fd, 8, 0)
    if len(raw) < 8:
        return None
    (n,) = struct.unpack("<Q", raw)
    if not 2 <= n <= _MAX_HEADER:
        return None
    return raw + os.pread(fd, n, 8)


def read_header(path: str | Path) -> dict | None:
    """The safetensors header of a file, or None if it is not a safetensors file (or cannot be read)."""
    try:
        opened = _open_regular(path)
        if opened is None:
            return None
        fd, _ = opened
        try:
            head = _read_head(fd)
        finally:
            os.close(fd)
    except OSError:
        return None
    parsed = _header_of(head) if head else None
    return parsed[1] if parsed else None


def is_state_header(head: bytes) -> bool:
    """Whether these first bytes (of a file or of stdin) begin a longqa state: a safetensors header whose
    metadata says so. Sorted keys put the format near the start; the whole header need not be there."""
    if len(head) < 10 or head[8:9] != b"{":
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= _MAX_HEADER and b'"format":"longqa-state"' in head[8 : 8 + min(n, 4096)]


def is_state_file(path: str | Path) -> bool:
    header = read_header(path)
    return header is not None and isinstance(header.get("__metadata__"), dict) and header["__metadata__"].get("format") == FORMAT


def _fail(name: str, what: str) -> StateError:
    return StateError(f"{name} is damaged or not a valid longqa state: {what}")


def check_header(path: str | Path, fingerprint: str | None) -> None:
    """The quick checks, before torch is loaded: the file is a readable longqa state of a known version,
    written by this model (fingerprint None: not checked). load() checks everything."""
    _, header, fd, _ = _load_header(path)
    os.close(fd)
    _metadata(show(path, 200), header, fingerprint)


def _load_header(path: str | Path) -> tuple[int, dict, int, int]:
    """(header length, header, fd, size), the fd open; StateError/RuntimeFailure saying why not."""
    name = show(path, 200)
    try:
        opened = _open_regular(path)
    except FileNotFoundError:
        raise StateError(f"no such state file: {name}") from None
    except PermissionError:
        raise RuntimeFailure(f"permission denied: {name}") from None
    except OSError as e:
        raise RuntimeFailure(f"cannot read {name}: {e.strerror or e}") from None
    if opened is None:
        if os.path.isdir(path):
            raise StateError(f"{name} is a directory, not a longqa state file")
        raise StateError(f"{name} is not a regular file, so not a longqa state file")
    fd, size = opened
    try:
        head = _read_head(fd)
    except OSError as e:
        os.close(fd)
        raise RuntimeFailure(f"cannot read {name}: {e.strerror or e}") from None
    parsed = _header_of(head) if head else None
    if parsed is None:
        os.close(fd)
        raise StateError(f"{name} is not a longqa state file")
    return parsed[0], parsed[1], fd, size


def _metadata(name: str, header: dict, fingerprint: str | None) -> dict[str, str]:
    """The metadata of a state of this format and a readable version, by this model; `name` as shown."""
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise StateError(f"{name} is a safetensors file but not a longqa state")
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise StateError(
            f"{name} has state format version {printable(str(version))[:20]}; this longqa reads versions {', '.join(READABLE_VERSIONS)}"
        )
    if fingerprint is not None:
        fp = meta.get("model_fingerprint")
        if fp != fingerprint:
            raise StateError(f"{name} was written by another model (fingerprint {show(str(fp), 20)}, this model {fingerprint})")
    return meta


def load(path: str | Path, fingerprint: str, layout: Layout | None = None) -> Memory:
    """Load a state written by this model and tokenizer, or raise StateError saying why not (RuntimeFailure
    if it cannot be read). With a layout (Layout.of(engine)), tensors are checked against the model."""
    n, header, fd, size = _load_header(path)
    try:
        _metadata(show(path, 200), header, fingerprint)
        expected = 8 + n + _data_size(show(path, 200), header)
        if size != expected:
            raise _fail(show(path, 200), f"{size:,} bytes where its header describes {expected:,} (truncated or extended)")
        data = b""
        while len(data) < size:
            more = os.pread(fd, size - len(data), len(data))
            if not more:
                break
            data += more
    except OSError as e:
        raise RuntimeFailure(f"cannot read {show(path, 200)}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    return decode(data, fingerprint, layout, path)


def _data_size(name: str, header: dict) -> int:
    """Bytes of tensor data a header describes; StateError unless its tensors are exactly A, z and pending
    of the right dtypes, laid out one after another."""
    names = set(header) - {"__metadata__"}
    if names != set(_TENSORS):
        raise _fail(name, f"tensors {sorted(names)[:5]}, expected A, z and pending")
    spans = []
    for key, dtype in _TENSORS.items():
        t = header[key]
        if not isinstance(t, dict) or t.get("dtype") != dtype:
            got = t.get("dtype") if isinstance(t, dict) else type(t).__name__
            raise _fail(name, f"{key} is {show(str(got), 20)}, expected {dtype}")
        shape, offsets = t.get("shape"), t.get("data_offsets")
        if not (isinstance(shape, list) and all(type(d) is int and 0 <= d < 1 << 40 for d in shape)):
            raise _fail(name, f"{key} has no valid shape")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int and o >= 0 for o in offsets)):
            raise _fail(name, f"{key} has no valid data offsets")
        if offsets[1] - offsets[0] != math.prod(shape) * _DTYPE_SIZE[dtype]:
            raise _fail(name, f"{key}'s data does not match its shape")
        spans.append(tuple(offsets))
    spans.sort()
    if spans[0][0] != 0 or any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
        raise _fail(name, "its tensors overlap or leave gaps")
    return spans[-1][1]


def decode(data: bytes, fingerprint: str, layout: Layout | None = None, name: str | Path | None = None) -> Memory:
    """A Memory from a state file's bytes, after every check (module docstring)."""
    import torch
    from safetensors.torch import load as st_load

    from longqa.model import MemoryState

    shown = "standard input" if name is None else show(name, 200)  # None: the bytes came from stdin
    parsed = _header_of(data)
    if parsed is None:
        raise StateError(f"{shown} is not a longqa state file")
    n, header = parsed
    meta = _metadata(shown, header, fingerprint)
    if 8 + n + _data_size(shown, header) != len(data):
        raise _fail(shown, "its size does not match its header (truncated or extended)")
    version = meta["format_version"]
    allowed = _META_V2 if version == "2" else _META_V1
    if not set(meta) <= allowed or not _META_V1 <= set(meta) or (version == "2" and "mentions" not in meta):
        raise _fail(shown, f"metadata fields {sorted(meta)[:10]}, expected {sorted(allowed)}")
    if not all(isinstance(v, str) for v in meta.values()):
        raise _fail(shown, "a metadata value is not a string")
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error types for every kind of damage
        raise _fail(shown, f"safetensors cannot read it ({str(e)[:80]})") from None
    described = {k: (_TENSORS[k], list(t.shape), _tensor_bytes(t)) for k, t in tensors.items()}
    checksum = meta["checksum"]
    want = _checksum(meta, described) if version == "2" else _checksum_v1(described)
    if not (len(checksum) == 64 and _HEX.fullmatch(checksum)) or checksum != want:
        raise _fail(shown, "checksum mismatch (the file changed after it was written)")
    A, z, pending = tensors["A"], tensors["z"], tensors["pending"]
    # Fields: checksummed in format 2, still checked (format 1 relies on these checks alone).
    tokens_s = meta["tokens"]
    if not (tokens_s.isascii() and tokens_s.isdigit() and len(tokens_s) <= 16 and int(tokens_s) <= _MAX_TOKENS):
        raise _fail(shown, f"tokens is {show(tokens_s, 20)}, not a count")
    tokens = int(tokens_s)
    try:
        sources = json.loads(meta["sources"])
        mentions = json.loads(meta["mentions"]) if version == "2" else None
    except (ValueError, RecursionError):
        raise _fail(shown, "sources or mentions is not JSON") from None
    if not (isinstance(sources, list) and all(isinstance(s, str) for s in sources)):
        raise _fail(shown, "sources is not a list of names")
    if mentions is not None and not (
        isinstance(mentions, list) and all(isinstance(m, str) and m in ENTITIES for m in mentions) and len(set(mentions)) == len(mentions)
    ):
        raise _fail(shown, "mentions is not a list of the world's names")
    if A.dim() != 3 or z.dim() != 2 or tuple(z.shape) != tuple(A.shape[:2]) or pending.dim() != 1:
        raise _fail(shown, f"A {list(A.shape)}, z {list(z.shape)} and pending {list(pending.shape)} do not fit together")
    if len(pending) > tokens:
        raise _fail(shown, f"{len(pending)} pending tokens but {tokens} tokens read")
    if layout is not None:
        if tuple(A.shape) != layout.A or tuple(z.shape) != layout.z:
            raise _fail(shown, f"A {list(A.shape)} and z {list(z.shape)}, this model's are {list(layout.A)} and {list(layout.z)}")
        if len(pending) >= layout.segment_len or tokens % layout.segment_len != len(pending):
            raise _fail(shown, f"{len(pending)} pending tokens do not fit {tokens} tokens read in segments of {layout.segment_len}")
        if len(pending) and not (0 <= int(pending.min()) and int(pending.max()) < layout.vocab_size):
            raise _fail(shown, f"a pending token id is outside the vocabulary (0 to {layout.vocab_size - 1})")
    if not (torch.isfinite(A).all() and torch.isfinite(z).all()):
        raise _fail(shown, "it holds NaN or infinite values")
    return Memory(
        MemoryState(A.unsqueeze(0), z.unsqueeze(0)),
        pending.tolist(),
        tokens,
        sources,
        None if mentions is None else set(mentions),
    )
