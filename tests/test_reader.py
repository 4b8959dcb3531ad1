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
    assert len(warnings) == 1 and "image.png" in warnings[0] and "a PNG image, not text" in warnings[0]
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


# ---- what is text (issue #32, #33) ----------------------------------------------------------------

ELF = b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 8


@pytest.mark.parametrize(
    "data, kind",
    [
        (ELF, "ELF executable"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "PNG image"),
        (b"\x80\x04\x95" + b"\x00" * 30, "pickle"),
        (b"PK\x03\x04" + b"\x00" * 30, "zip"),
        (bytes(range(256)) * 4, "binary data"),
        ("Mary went to the kitchen. ".encode("utf-16-le") * 20, "UTF-16 text without a byte-order mark"),
        (b"\x28\xb5\x2f\xfd" + b"\x00" * 20, "zstd"),
    ],
    ids=["elf", "png", "pickle", "zip", "random", "utf16-no-bom", "zstd"],
)
def test_a_file_that_is_not_text_is_refused_when_given_by_name(tmp_path: Path, data: bytes, kind: str) -> None:
    (tmp_path / "f").write_bytes(data)
    with pytest.raises(InputError, match=f"is .*{kind}.*not text; refused"):
        documents(str(tmp_path / "f"), pytest.fail)
    (tmp_path / "f.gz").write_bytes(gzip.compress(data))  # the same inside a compressed file
    with pytest.raises(InputError, match="not text; refused"):
        documents(str(tmp_path / "f.gz"), pytest.fail)


@pytest.mark.parametrize(
    "data",
    [TEXT.encode(), TEXT.encode().replace(b" ", b" \x00", 20), "Le café est très bon. ".encode("latin-1") * 50, "Привет, мир. ".encode("cp1251") * 50, b"\x1b[31mred\x1b[0m log line\n" * 50,
     codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le"), b""],
    ids=["utf8", "a-few-nuls", "latin1", "cp1251", "ansi-colours", "utf16-bom", "empty"],
)
def test_text_with_a_few_odd_bytes_is_still_text(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "t.txt").write_bytes(data)
    assert reader.binary_kind(data[: reader.SNIFF_BYTES]) is None
    assert documents(str(tmp_path / "t.txt"), pytest.fail) == [Document(str(tmp_path / "t.txt"), len(data))]


def test_a_compressed_binary_in_a_directory_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Mary went to the kitchen.")
    (tmp_path / "b.bin.gz").write_bytes(gzip.compress(ELF))
    (tmp_path / "c.txt.xz").write_bytes(lzma.compress(b"John went to the garden."))
    warnings: list[str] = []
    docs = documents(str(tmp_path), warnings.append)
    assert [Path(d.name).name for d in docs] == ["a.txt", "c.txt.xz"]
    assert len(warnings) == 1 and "b.bin.gz" in warnings[0] and "ELF executable, not text" in warnings[0]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for rel in ["a.txt", "b.md", ".hidden.txt", ".git/COMMIT_EDITMSG", ".venv/lib/x.txt", "docs/c.txt", "docs/.secret.txt",
                "docs/skip/d.txt", "logs/e.log"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"{rel}. ")
    return tmp_path


def _rel(docs: list[Document], root: Path) -> list[str]:
    return [os.path.relpath(d.name, root) for d in docs]


def test_hidden_files_and_folders_are_skipped_unless_asked_for(tree: Path) -> None:
    assert _rel(documents(str(tree), pytest.fail), tree) == ["a.txt", "b.md", "docs/c.txt", "docs/skip/d.txt", "logs/e.log"]
    assert _rel(documents(str(tree), pytest.fail, hidden=True), tree) == [
        ".git/COMMIT_EDITMSG", ".hidden.txt", ".venv/lib/x.txt", "a.txt", "b.md", "docs/.secret.txt", "docs/c.txt",
        "docs/skip/d.txt", "logs/e.log"]
    # A hidden directory named as SOURCE is read: only what is below it is judged.
    assert _rel(documents(str(tree / ".git"), pytest.fail), tree) == [".git/COMMIT_EDITMSG"]


@pytest.mark.parametrize(
    "globs, expected",
    [
        (["*.txt"], ["a.txt", "docs/c.txt", "docs/skip/d.txt"]),
        (["*.txt", "*.log"], ["a.txt", "docs/c.txt", "docs/skip/d.txt", "logs/e.log"]),
        (["!*.txt"], ["b.md", "logs/e.log"]),
        (["!skip"], ["a.txt", "b.md", "docs/c.txt", "logs/e.log"]),
        (["docs/*"], ["docs/c.txt", "docs/skip/d.txt"]),
        (["*.txt", "!docs/skip/"], ["a.txt", "docs/c.txt"]),
    ],
)
def test_globs_filter_as_ripgrep_does(tree: Path, globs: list[str], expected: list[str]) -> None:
    assert _rel(documents(str(tree), pytest.fail, globs=globs), tree) == expected


def test_a_directory_of_only_hidden_or_filtered_files_says_why(tmp_path: Path) -> None:
    (tmp_path / ".notes.txt").write_text("Mary went to the kitchen.")
    (tmp_path / "a.log").write_text("Mary went to the kitchen.")
    with pytest.raises(InputError, match=r"no text files in directory: .*\(1 hidden skipped: --hidden reads them; 1 left out by -g\)"):
        documents(str(tmp_path), pytest.fail, globs=["*.txt"])


def test_nesting_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    limit = sys.getrecursionlimit()
    depth = 400  # deeper than the limit set below: what a recursive walk (os.walk on 3.11) cannot do
    deep = str(tmp_path)
    for _ in range(depth):  # Path.mkdir(parents=True) itself recurses too deep for this
        deep += "/d"
        os.mkdir(deep)
    deep = Path(deep)
    (deep / "x.txt").write_text("Mary went to the kitchen.")
    (tmp_path / "a.txt").write_text("John went to the garden.")
    try:
        sys.setrecursionlimit(250)
        try:
            docs = documents(str(tmp_path), pytest.fail)
        finally:
            sys.setrecursionlimit(limit)
        assert [Path(d.name).name for d in docs] == ["a.txt", "x.txt"]
    finally:  # pytest's own cleanup (shutil.rmtree) recurses too deep for this tree
        (deep / "x.txt").unlink()
        path = str(deep)
        while path != str(tmp_path):
            os.rmdir(path)
            path = os.path.dirname(path)


def test_replaced_bytes_and_mentions_are_counted_while_reading(tmp_path: Path, small_chunks: None) -> None:
    (tmp_path / "bad.txt").write_bytes(b"Mary went to the \xffkitchen. \xe6\x97 ok. FRED \xc3\xa9")
    (doc,) = documents(str(tmp_path / "bad.txt"), pytest.fail)
    assert "".join(doc.chunks()) == "Mary went to the \ufffdkitchen. \ufffd ok. FRED é"
    assert doc.stats.replaced == 3
    assert doc.stats.mentions.found == {"Mary", "kitchen", "Fred"}


def test_stdin_head_is_given_back_to_the_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", FakeStdin(TEXT.encode()))
    assert reader.stdin_head(10) == TEXT.encode()[:10]
    assert reader.stdin_head() == TEXT.encode()[: reader.SNIFF_BYTES]  # more, still kept
    assert read_all("-") == TEXT
    monkeypatch.setattr(sys, "stdin", FakeStdin(gzip.compress(TEXT.encode())))
    assert reader.binary_kind(reader.decompressed_head(reader.stdin_head())) is None
    assert read_all("-") == TEXT
