"""SOURCE handling (cli.md): stdin, compression by content, directories, encodings, segments."""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import lzma
import os
import sys
import threading
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest

from longqa.errors import InputError
from longqa.input import reader
from longqa.input.reader import Document, documents, read_chunks
from longqa.input.segments import Segmenter

TEXT = "Mary went to the kitchen. Grüße aus Köln! 日本語のテキスト。 Emoji 😀 here.\n" * 300


def read_all(path: str | Path, progress=None) -> str:
    p = str(path)
    size = os.path.getsize(p) if os.path.isfile(p) else None
    return "".join(read_chunks(Document(p, size), progress))


class FakeStdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "CHUNK_BYTES", 7)


# ---- stdin and compression ------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True])
def test_stdin_equals_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunked: bool) -> None:
    if chunked:
        monkeypatch.setattr(reader, "CHUNK_BYTES", 5)
    f = tmp_path / "doc.txt"
    f.write_text(TEXT, encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", FakeStdin(f.read_bytes()))
    assert documents("-", pytest.fail) == [Document("-", None)]
    from_stdin = read_all("-")
    assert from_stdin == read_all(f) == TEXT


def test_compressed_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", FakeStdin(gzip.compress(TEXT.encode())))
    assert read_all("-") == TEXT


@pytest.mark.parametrize("chunk", [None, 7])
def test_compressed_files_are_recognised_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int | None) -> None:
    if chunk:
        monkeypatch.setattr(reader, "CHUNK_BYTES", chunk)
    data = TEXT.encode("utf-8")
    files = {
        "plain.txt": data,
        "x.txt": gzip.compress(data),  # gzip, misleading name
        "y.dat": bz2.compress(data),
        "z": lzma.compress(data),
    }
    for name, blob in files.items():
        (tmp_path / name).write_bytes(blob)
    texts = {name: read_all(tmp_path / name) for name in files}
    assert all(t == TEXT for t in texts.values()), {k: len(v) for k, v in texts.items()}


def test_progress_counts_raw_bytes(tmp_path: Path, small_chunks: None) -> None:
    for name, blob in [("a.txt", TEXT.encode()), ("b.gz", gzip.compress(TEXT.encode()))]:
        (tmp_path / name).write_bytes(blob)
        seen: list[int] = []
        read_all(tmp_path / name, seen.append)
        assert sum(seen) == len(blob)


def test_truncated_gzip_is_refused(tmp_path: Path) -> None:
    blob = gzip.compress(TEXT.encode())
    (tmp_path / "t.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputError, match="damaged or truncated gzip"):
        read_all(tmp_path / "t.gz")


# ---- encodings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [None, 1, 2])
def test_utf8_bom_is_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int | None) -> None:
    if chunk:
        monkeypatch.setattr(reader, "CHUNK_BYTES", chunk)
    (tmp_path / "bom.txt").write_bytes(codecs.BOM_UTF8 + "Hello. Grüße.".encode())
    assert read_all(tmp_path / "bom.txt") == "Hello. Grüße."


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_bom_is_decoded(tmp_path: Path, encoding: str) -> None:
    bom = {"utf-16": b"", "utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}[encoding]
    (tmp_path / "u16.txt").write_bytes(bom + TEXT.encode(encoding))
    assert read_all(tmp_path / "u16.txt") == TEXT
    assert documents(str(tmp_path), pytest.fail) == [Document(str(tmp_path / "u16.txt"), (tmp_path / "u16.txt").stat().st_size)]


def test_utf16_read_in_small_pieces(tmp_path: Path, small_chunks: None) -> None:
    (tmp_path / "u16.txt").write_bytes(TEXT.encode("utf-16"))
    assert read_all(tmp_path / "u16.txt") == TEXT


def test_invalid_utf8_is_replaced_not_fatal(tmp_path: Path, small_chunks: None) -> None:
    (tmp_path / "bad.txt").write_bytes(b"ab\xffcd \xe6\x97 ok. \xc3\xa9")
    assert read_all(tmp_path / "bad.txt") == "ab\ufffdcd \ufffd ok. é"


def test_empty_file_gives_no_text(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    assert read_all(tmp_path / "empty.txt") == ""


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        documents(str(tmp_path / "nope.txt"), pytest.fail)
    with pytest.raises(InputError, match="no such file"):
        read_all(tmp_path / "nope.txt")


# ---- directories ----------------------------------------------------------------------------------


def test_directory_sorted_recursive_binary_skipped(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    for rel in ["c.txt", "a.txt", "b/z.txt", "b/1.txt", "b/sub/z.txt", "d/e/f.md"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"{rel}. ", encoding="utf-8")
    (root / "b" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (root / "b" / "packed.gz").write_bytes(gzip.compress(b"packed text."))
    warnings: list[str] = []
    docs = documents(str(root), warnings.append)
    rel = [os.path.relpath(d.name, root) for d in docs]
    assert rel == ["a.txt", "b/1.txt", "b/packed.gz", "b/sub/z.txt", "b/z.txt", "c.txt", "d/e/f.md"]
    assert len(warnings) == 1 and "image.png" in warnings[0] and "binary" in warnings[0]
    assert all(d.size == os.path.getsize(d.name) for d in docs)


def test_directory_without_text_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bin").write_bytes(b"\x00\x01\x02")
    warnings: list[str] = []
    with pytest.raises(InputError, match="no text files"):
        documents(str(tmp_path), warnings.append)
    assert len(warnings) == 1


def test_symlink_loop_does_not_hang(tmp_path: Path) -> None:
    root = tmp_path / "loop"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a.")
    (root / "sub" / "b.txt").write_text("b.")
    os.symlink(root, root / "sub" / "back")  # sub/back -> root -> sub -> back -> ...
    os.symlink(root / "sub", root / "sub" / "self")
    result: list = []
    t = threading.Thread(target=lambda: result.append(documents(str(root), lambda m: None)), daemon=True)
    t.start()
    t.join(timeout=20)
    assert not t.is_alive(), "documents() hangs on a symlink loop"
    names = sorted(os.path.realpath(d.name) for d in result[0])
    assert names == sorted({os.path.realpath(root / "a.txt"), os.path.realpath(root / "sub" / "b.txt")})


# ---- segments -------------------------------------------------------------------------------------


def test_segmenter_cuts_exact_sizes_and_keeps_the_tail() -> None:
    seg = Segmenter(4)
    segments = list(seg.push(list(range(10))))
    assert all(s.dtype == np.int64 for s in segments)
    assert [s.tolist() for s in segments] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert seg.pending == [8, 9]
    assert list(seg.push([10])) == []
    assert seg.pending == [8, 9, 10]
    assert [s.tolist() for s in seg.push([11, 12, 13, 14, 15, 16, 17, 18])] == [[8, 9, 10, 11], [12, 13, 14, 15]]
    assert seg.pending == [16, 17, 18]


def test_segmenter_starts_from_pending_without_aliasing_it() -> None:
    pending = [1, 2, 3]
    seg = Segmenter(4, pending)
    assert [s.tolist() for s in seg.push([4, 5])] == [[1, 2, 3, 4]]
    assert seg.pending == [5]
    assert pending == [1, 2, 3]


def test_segmenter_takes_arrays_and_lists_alike() -> None:
    lists, arrays = Segmenter(4, [7]), Segmenter(4, [7])
    parts = [[1, 2], [3, 4, 5, 6, 8], [], [9, 10, 11]]
    from_lists = [s.tolist() for p in parts for s in lists.push(p)]
    from_arrays = [s.tolist() for p in parts for s in arrays.push(np.array(p, dtype=np.int64))]
    assert from_lists == from_arrays == [[7, 1, 2, 3], [4, 5, 6, 8]]
    assert lists.pending == arrays.pending == [9, 10, 11]
    assert all(s.dtype == np.int64 for s in arrays.push(np.arange(4, dtype=np.int32)))
