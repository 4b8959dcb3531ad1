"""Turn a SOURCE (file, directory, '-', compressed file) into text chunks and fixed-size token segments.

Everything streams: memory use is bounded by the chunk size whatever the input size (cli.md SOURCE rules).
Each file is its own text: the sentence splitter is flushed at its end, so reading a directory equals
reading its files one after another, and appending a file to a saved memory equals reading it in one go.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import lzma
import os
import stat
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from tokenizers import Tokenizer

from longqa.errors import InputError, RuntimeFailure
from longqa.input.tokenize_pool import encode_pieces

CHUNK_BYTES = 1 << 20
_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz"}
_OPENERS: dict[str, Callable[[BinaryIO], BinaryIO]] = {
    "gzip": lambda f: gzip.GzipFile(fileobj=f),  # type: ignore[dict-item]
    "bz2": lambda f: bz2.BZ2File(f),  # type: ignore[dict-item]
    "xz": lambda f: lzma.LZMAFile(f),  # type: ignore[dict-item]
}
_BAD_ARCHIVE = (EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)

Progress = Callable[[int], None]  # called with the number of (raw, on-disk) bytes just consumed
Warn = Callable[[str], None]


@dataclass(frozen=True)
class Document:
    """One text to read: a path, or '-' for standard input."""

    name: str
    size: int | None  # bytes on disk, None for pipes

    def chunks(self, progress: Progress | None = None) -> Iterator[str]:
        return read_chunks(self, progress)


def _compression(head: bytes) -> str | None:
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


def _decoder(head: bytes) -> codecs.IncrementalDecoder:
    # UTF-16 is recognised only by its BOM; everything else is UTF-8 (BOM dropped), bad bytes replaced.
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return codecs.getincrementaldecoder("utf-16")(errors="replace")
    return codecs.getincrementaldecoder("utf-8-sig")(errors="replace")


class _Counting:
    """File wrapper that reports raw bytes read (so progress tracks compressed input too) and can
    give back the magic-number bytes it was asked to peek at."""

    def __init__(self, f: BinaryIO, progress: Progress | None) -> None:
        self.f, self.progress, self.head = f, progress, b""

    def peek(self, n: int) -> bytes:
        self.head = self.read(n)
        return self.head

    def read(self, n: int = -1) -> bytes:
        head, self.head = self.head, b""
        if head and 0 <= n <= len(head):
            self.head = head[n:]
            return head[:n]
        data = self.f.read(n - len(head) if n >= 0 else -1)
        if self.progress:
            self.progress(len(data))
        return head + data

    def readable(self) -> bool:
        return True

    def __getattr__(self, name: str):  # close() and friends, for the decompressors
        return getattr(self.f, name)


def read_chunks(doc: Document, progress: Progress | None = None) -> Iterator[str]:
    """Decoded text of one document, in chunks of about CHUNK_BYTES."""
    is_stdin = doc.name == "-"
    try:
        if is_stdin:
            # sys.stdin is None when the process was started with fd 0 closed (`<&-`): no input at all.
            raw: BinaryIO = io.BytesIO() if sys.stdin is None else sys.stdin.buffer
        else:
            raw = open(doc.name, "rb")
    except FileNotFoundError:
        raise InputError(f"no such file: {doc.name}") from None
    except IsADirectoryError:
        raise InputError(f"is a directory: {doc.name}") from None
    except PermissionError:
        raise RuntimeFailure(f"permission denied: {doc.name}") from None
    except OSError as e:
        raise RuntimeFailure(f"cannot open {doc.name}: {e.strerror or e}") from None
    kind = None
    try:
        counted = _Counting(raw, progress)
        kind = _compression(counted.peek(8))
        stream: BinaryIO = _OPENERS[kind](counted) if kind else counted  # type: ignore[arg-type,assignment]
        first = stream.read(CHUNK_BYTES)
        decoder = _decoder(first)
        data = first
        while data:
            text = decoder.decode(data)
            if text:
                yield text
            data = stream.read(CHUNK_BYTES)
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail
    except _BAD_ARCHIVE as e:
        if isinstance(e, OSError) and not kind:
            raise RuntimeFailure(f"cannot read {doc.name}: {e.strerror or e}") from None
        raise InputError(f"{doc.name}: damaged or truncated {kind} data ({e})") from None
    finally:
        # Decide by the name, not by looking at sys.stdin: reading a regular file must not depend on
        # it, and it may be None (process started with stdin closed) or lack .buffer (embedding).
        if not is_stdin:
            raw.close()


def _looks_binary(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(8192)
    if _compression(head) or head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    return b"\x00" in head


def _container_kind(head: bytes) -> str | None:
    """Formats that are certainly not text and that people mistake for saved memories (mem.pt)."""
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "Python pickle"
    if head.startswith(b"PK\x03\x04"):
        return "zip (torch.save)"
    if len(head) >= 10 and head[8:10] == b'{"':
        return "safetensors"
    return None


def documents(source: str, warn: Warn) -> list[Document]:
    """The documents of one SOURCE: itself, or every text file below a directory in sorted path order."""
    if source == "-":
        return [Document("-", None)]
    p = Path(source)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"no such file or directory: {source}") from None
    except OSError as e:
        raise InputError(f"cannot access {source}: {e.strerror or e}") from None
    if not p.is_dir():
        if stat.S_ISREG(st.st_mode):
            try:
                with open(source, "rb") as f:
                    kind = _container_kind(f.read(16))
            except OSError:
                kind = None  # the reader reports it when it opens the file
            if kind:
                raise InputError(f"{source} is a {kind} file, not text nor a longqa state; refused")
        return [Document(source, st.st_size if stat.S_ISREG(st.st_mode) else None)]
    docs: list[Document] = []
    seen: set[str] = set()
    for root, dirs, files in os.walk(source, followlinks=True, onerror=lambda e: warn(f"skipped {e.filename}: {e.strerror}")):
        real = os.path.realpath(root)
        if real in seen:  # a symlink loop, or the same folder twice: read it once
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            try:
                if not os.path.isfile(path):
                    warn(f"skipped {path}: not a regular file")
                elif _looks_binary(path):
                    warn(f"skipped {path}: binary file")
                else:
                    docs.append(Document(path, os.path.getsize(path)))
            except OSError as e:
                warn(f"skipped {path}: {e.strerror or e}")
    # os.walk visits a folder's files before its subfolders; the contract is sorted path order.
    docs.sort(key=lambda d: Path(d.name).parts)
    if not docs:
        raise InputError(f"no text files in directory: {source}")
    return docs


def token_stream(tokenizer: Tokenizer, doc: Document, progress: Progress | None = None) -> Iterator[list[int] | np.ndarray]:
    """Token ids of one document, in pieces (lists or int64 arrays), exactly as text.encode_text would give
    for the whole text. A big document is tokenised in worker processes (tokenize_pool)."""
    return encode_pieces(tokenizer, doc.chunks(progress))
