"""Turn a SOURCE (file, directory, '-', compressed file) into text chunks and fixed-size token segments.

Everything streams: memory use is bounded by the chunk size whatever the input size (cli.md SOURCE rules).
Each file is its own text: the sentence splitter is flushed at its end, so reading a directory equals
reading its files one after another, and appending a file to a saved memory equals reading it in one go.

What is text is decided by content, the same way for a file given directly, a file in a directory, a
compressed file (its decompressed start) and standard input (binary_kind). A directory is walked without
recursion (any depth), hidden entries skipped unless asked for, as ripgrep does, and filtered by globs.
"""

from __future__ import annotations

import bz2
import codecs
import fnmatch
import gzip
import io
import lzma
import os
import stat
import sys
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from longqa.errors import InputError, RuntimeFailure, printable, show
from longqa.questions import MentionScanner

if TYPE_CHECKING:
    import numpy as np
    from tokenizers import Tokenizer

CHUNK_BYTES = 1 << 20
SNIFF_BYTES = 8192  # what binary_kind looks at
BINARY_SHARE = 0.05  # more than this share of control bytes at the start: binary (see binary_kind)
_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz"}
_OPENERS: dict[str, Callable[[BinaryIO], BinaryIO]] = {
    "gzip": lambda f: gzip.GzipFile(fileobj=f),  # type: ignore[dict-item]
    "bz2": lambda f: bz2.BZ2File(f),  # type: ignore[dict-item]
    "xz": lambda f: lzma.LZMAFile(f),  # type: ignore[dict-item]
}
_BAD_ARCHIVE = (EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)
# Formats that are certainly not text: some are what people mistake for a saved memory (mem.pt).
_NOT_TEXT = {
    b"\x7fELF": "an ELF executable",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"%PDF-": "a PDF document",
    b"SQLite format 3\x00": "an SQLite database",
    b"PK\x03\x04": "a zip archive (or torch.save file)",
    b"\xca\xfe\xba\xbe": "a Java class or Mach-O file",
    b"7z\xbc\xaf\x27\x1c": "a 7-Zip archive",
    b"\x28\xb5\x2f\xfd": "zstd-compressed (longqa reads gzip, bz2 and xz: decompress it first)",
    b"\x04\x22\x4d\x18": "lz4-compressed (longqa reads gzip, bz2 and xz: decompress it first)",
}
_TEXT_CONTROLS = frozenset(b"\t\n\v\f\r\x1b")  # control bytes that text has (\x1b: colours in logs)

Progress = Callable[[int], None]  # called with the number of (raw, on-disk) bytes just consumed
Warn = Callable[[str], None]


@dataclass
class ReadStats:
    """What reading a document found besides its text."""

    replaced: int = 0  # bytes that were not valid text, replaced by U+FFFD
    mentions: MentionScanner = field(default_factory=MentionScanner)


@dataclass(frozen=True)
class Document:
    """One text to read: a path, or '-' for standard input."""

    name: str
    size: int | None  # bytes on disk, None for pipes
    stats: ReadStats = field(default_factory=ReadStats, compare=False, repr=False)

    def chunks(self, progress: Progress | None = None) -> Iterator[str]:
        return read_chunks(self, progress)


def _compression(head: bytes) -> str | None:
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


# Decoding errors are replaced, and counted for the one warning that says how many bytes were (per thread:
# documents read in lockstep all decode in the thread that reads ahead, one decode() call at a time).
_replaced = threading.local()


def _count_and_replace(e: UnicodeError) -> tuple[str, int]:
    _replaced.n = getattr(_replaced, "n", 0) + (e.end - e.start)  # type: ignore[attr-defined]
    return "\ufffd", e.end  # type: ignore[attr-defined]


codecs.register_error("longqa-replace", _count_and_replace)


def _decoder(head: bytes) -> codecs.IncrementalDecoder:
    # UTF-16 is recognised only by its BOM; everything else is UTF-8 (BOM dropped), bad bytes replaced.
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return codecs.getincrementaldecoder("utf-16")(errors="longqa-replace")
    return codecs.getincrementaldecoder("utf-8-sig")(errors="longqa-replace")


def binary_kind(head: bytes) -> str | None:
    """What the start of a (decompressed) file is if it is not text, in words; None if it is text."""
    for magic, kind in _NOT_TEXT.items():
        if head.startswith(magic):
            return kind
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle"
    if len(head) >= 10 and head[8:10] == b'{"' and int.from_bytes(head[:8], "little") < 1 << 27:
        return "a safetensors file"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or not head:
        return None
    pairs = len(head) // 2
    if pairs >= 8:
        even, odd = head[0 : 2 * pairs : 2].count(0), head[1 : 2 * pairs : 2].count(0)
        if max(even, odd) > 0.4 * pairs and min(even, odd) < 0.05 * pairs:
            return "UTF-16 text without a byte-order mark (convert it: iconv -f UTF-16LE -t UTF-8)"
    # Text in any encoding has almost no control bytes (NUL, \x01-\x1f but tab, newlines, form feed and ESC);
    # random or packed data has about 11 %. Bytes that are not UTF-8 say nothing: a Latin-1 or cp1251 text
    # is full of them, and is read with them replaced (and a warning).
    controls = sum(1 for b in head if b < 0x20 and b not in _TEXT_CONTROLS) + head.count(0x7F)
    if controls > BINARY_SHARE * len(head):
        return f"binary data ({100 * controls // len(head)} % of its first {len(head):,} bytes are control bytes)"
    return None


def decompressed_head(head: bytes) -> bytes:
    """The start of what compressed bytes hold (as much as `head` gives), or head itself if it is not
    compressed; b"" if it cannot be decompressed (the reader refuses it with the decompressor's reason)."""
    kind = _compression(head)
    try:
        if kind == "gzip":
            return zlib.decompressobj(31).decompress(head, SNIFF_BYTES)
        if kind == "bz2":
            return bz2.BZ2Decompressor().decompress(head, SNIFF_BYTES)
        if kind == "xz":
            return lzma.LZMADecompressor().decompress(head, SNIFF_BYTES)
    except _BAD_ARCHIVE:
        return b""
    return head


def _sniff_file(path: str) -> str | None:
    """binary_kind of a regular file's start, decompressed first if it is compressed; None if it cannot
    be read here (the reader says why when it opens it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
            kind = _compression(head)
            if kind:
                f.seek(0)
                try:
                    head = _OPENERS[kind](f).read(SNIFF_BYTES)  # type: ignore[arg-type]
                except _BAD_ARCHIVE:
                    return None  # damaged: the reader refuses it with the decompressor's reason
    except OSError:
        return None
    return binary_kind(head)


class _Counting:
    """File wrapper that reports raw bytes read (so progress tracks compressed input too) and can
    give back the magic-number bytes it was asked to peek at."""

    def __init__(self, f: BinaryIO, progress: Progress | None, head: bytes = b"") -> None:
        self.f, self.progress, self.head = f, progress, head
        if head and progress:
            progress(len(head))

    def peek(self, n: int) -> bytes:
        while len(self.head) < n:
            more = self.f.read(n - len(self.head))
            if not more:
                break
            if self.progress:
                self.progress(len(more))
            self.head += more
        return self.head[:n]

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


# ---- standard input -----------------------------------------------------------------------------

_stdin_head: tuple[object, bytes] | None = None  # (the sys.stdin it was read from, its first bytes)


def _stdin_buffer() -> BinaryIO:
    # sys.stdin is None when the process was started with fd 0 closed (`<&-`): no input at all.
    return io.BytesIO() if sys.stdin is None else sys.stdin.buffer


def stdin_head(n: int = SNIFF_BYTES) -> bytes:
    """The first bytes of standard input (up to n; fewer only at its end), read once and kept: reading
    stdin as text later starts with them. Lets the CLI tell a state or a binary from text on stdin."""
    global _stdin_head
    if _stdin_head is None or _stdin_head[0] is not sys.stdin:
        _stdin_head = (sys.stdin, b"")
    have = _stdin_head[1]
    if len(have) < n:
        buf = _stdin_buffer()
        while len(have) < n:
            more = buf.read(n - len(have))
            if not more:
                break
            have += more
        _stdin_head = (sys.stdin, have)
    return have[:n] if len(have) > n else have


def _take_stdin_head() -> bytes:
    global _stdin_head
    if _stdin_head is None or _stdin_head[0] is not sys.stdin:
        return b""
    head, _stdin_head = _stdin_head[1], None
    return head


def read_stdin_bytes(limit: int) -> bytes:
    """All of standard input (its kept head included), or InputError past `limit` bytes."""
    data = _take_stdin_head() + _stdin_buffer().read(limit + 1)
    if len(data) > limit:
        raise InputError(f"standard input is larger than a saved memory can be ({limit:,} bytes)")
    return data


# ---- one document -------------------------------------------------------------------------------


def read_chunks(doc: Document, progress: Progress | None = None) -> Iterator[str]:
    """Decoded text of one document, in chunks of about CHUNK_BYTES. Counts replaced bytes and the
    world's names found into doc.stats."""
    is_stdin = doc.name == "-"
    try:
        raw: BinaryIO = _stdin_buffer() if is_stdin else open(doc.name, "rb")
    except FileNotFoundError:
        raise InputError(f"no such file: {show(doc.name, 200)}") from None
    except IsADirectoryError:
        raise InputError(f"is a directory: {show(doc.name, 200)}") from None
    except PermissionError:
        raise RuntimeFailure(f"permission denied: {show(doc.name, 200)}") from None
    except OSError as e:
        raise RuntimeFailure(f"cannot open {show(doc.name, 200)}: {e.strerror or e}") from None
    kind = None
    stats = doc.stats
    try:
        counted = _Counting(raw, progress, _take_stdin_head() if is_stdin else b"")
        kind = _compression(counted.peek(8))
        stream: BinaryIO = _OPENERS[kind](counted) if kind else counted  # type: ignore[arg-type,assignment]
        first = stream.read(CHUNK_BYTES)
        decoder = _decoder(first)
        data = first
        final = False
        while True:
            _replaced.n = 0
            text = decoder.decode(data, final=final)
            stats.replaced += _replaced.n
            if text:
                stats.mentions.feed(text)
                yield text
            if final:
                break
            data = stream.read(CHUNK_BYTES)
            final = not data
    except _BAD_ARCHIVE as e:
        if isinstance(e, OSError) and not kind:
            raise RuntimeFailure(f"cannot read {show(doc.name, 200)}: {e.strerror or e}") from None
        raise InputError(f"{show(doc.name, 200)}: damaged or truncated {kind} data ({str(e)[:100]})") from None
    finally:
        # Decide by the name, not by looking at sys.stdin: reading a regular file must not depend on
        # it, and it may be None (process started with stdin closed) or lack .buffer (embedding).
        if not is_stdin:
            raw.close()


# ---- a SOURCE -----------------------------------------------------------------------------------


def _matches(pattern: str, rel: str, name: str) -> bool:
    """A glob as ripgrep's -g reads it: with a slash, against the path below the directory; else the name."""
    pattern = pattern.rstrip("/")
    if "/" in pattern:
        return fnmatch.fnmatchcase(rel, pattern.lstrip("/"))
    return fnmatch.fnmatchcase(name, pattern)


def documents(source: str, warn: Warn, hidden: bool = False, globs: Sequence[str] = ()) -> list[Document]:
    """The documents of one SOURCE: itself, or every text file below a directory in sorted path order.

    A file given by name is read whatever its name; one that is not text is refused (InputError). Below a
    directory, hidden files and folders (names starting with '.') are skipped unless `hidden`, files that
    are not text are skipped with a warning, and `globs` filter as ripgrep's -g does: a file is read if it
    matches any glob without '!' (or there is none) and no glob with '!', which also prunes folders."""
    if source == "-":
        return [Document("-", None)]
    try:
        st = os.stat(source)
    except FileNotFoundError:
        raise InputError(f"no such file or directory: {show(source, 200)}") from None
    except OSError as e:
        raise InputError(f"cannot access {show(source, 200)}: {e.strerror or e}") from None
    if not stat.S_ISDIR(st.st_mode):
        if stat.S_ISREG(st.st_mode):
            kind = _sniff_file(source)
            if kind:
                raise InputError(f"{show(source, 200)} is {kind}, not text; refused")
        return [Document(source, st.st_size if stat.S_ISREG(st.st_mode) else None)]
    return _walk(source, warn, hidden, globs)


def _walk(root: str, warn: Warn, hidden: bool, globs: Sequence[str]) -> list[Document]:
    include = [g for g in globs if not g.startswith("!")]
    exclude = [g[1:] for g in globs if g.startswith("!")]
    docs: list[Document] = []
    seen: set[tuple[int, int]] = set()
    skipped_hidden = filtered = 0
    stack = [(root, "")]  # (path, path relative to root): a list, not recursion, so any depth is fine
    while stack:
        folder, rel_folder = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:  # a symlink loop, or the same folder twice: read it once
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            warn(f"skipped {show(folder, 200)}: {e.strerror or e}")
            continue
        for entry in entries:
            rel = f"{rel_folder}{entry.name}"
            if entry.name.startswith(".") and not hidden:
                skipped_hidden += 1
                continue
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError as e:
                warn(f"skipped {show(entry.path, 200)}: {e.strerror or e}")
                continue
            if is_dir:
                if any(_matches(g, rel, entry.name) for g in exclude):
                    filtered += 1
                else:
                    stack.append((entry.path, rel + "/"))
                continue
            if (include and not any(_matches(g, rel, entry.name) for g in include)) or any(
                _matches(g, rel, entry.name) for g in exclude
            ):
                filtered += 1
                continue
            if not is_file:
                warn(f"skipped {show(entry.path, 200)}: not a regular file")
                continue
            kind = _sniff_file(entry.path)
            if kind:
                warn(f"skipped {show(entry.path, 200)}: {kind.split(' (')[0]}, not text")  # the short kind
                continue
            try:
                docs.append(Document(entry.path, os.path.getsize(entry.path)))
            except OSError as e:
                warn(f"skipped {show(entry.path, 200)}: {e.strerror or e}")
    # The contract is sorted path order (a folder's files and subfolders interleaved by name).
    docs.sort(key=lambda d: Path(d.name).parts)
    if not docs:
        why = []
        if skipped_hidden:
            why.append(f"{skipped_hidden} hidden skipped: --hidden reads them")
        if filtered:
            why.append(f"{filtered} left out by -g")
        raise InputError(f"no text files in directory: {show(root, 200)}" + (f" ({'; '.join(why)})" if why else ""))
    return docs


def display_name(name: str) -> str:
    """A document's name as output shows it: valid UTF-8 on one line (errors.printable)."""
    return printable(name)


def token_stream(tokenizer: Tokenizer, doc: Document, progress: Progress | None = None) -> Iterator[list[int] | np.ndarray]:
    """Token ids of one document, in pieces (lists or int64 arrays), exactly as text.encode_text would give
    for the whole text. A big document is tokenised in worker processes (tokenize_pool)."""
    from longqa.input.tokenize_pool import encode_pieces

    return encode_pieces(tokenizer, doc.chunks(progress))
