"""Tokenising in worker processes (tokenize_pool): the same ids as in one thread, errors as one line."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from longqa.errors import InputError, RuntimeFailure
from longqa.input import reader, tokenize_pool
from longqa.input.reader import Document, token_stream
from longqa.input.text import encode_text, load_tokenizer

SAMPLE = (Path(__file__).resolve().parent.parent / "longqa" / "lab" / "generate" / "data" / "noise-sample.txt").read_text()


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    return load_tokenizer(tiny_model / "tokenizer.json")


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks and pieces of a few KB, so that a small document goes through the workers in many pieces."""
    monkeypatch.setenv("LONGQA_TOKENIZER_WORKERS", "2")
    monkeypatch.setattr(reader, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(tokenize_pool, "PIECE_CHARS", 3000)


def ids_of(tokenizer, path: Path) -> list[int]:
    return [int(i) for piece in token_stream(tokenizer, Document(str(path), None)) for i in piece]


_word = st.text(alphabet="abXé日😀", min_size=1, max_size=8)
_part = st.one_of(
    _word, _word, st.sampled_from([". ", "! ", '." ', ".)\n", "...", " ", "\n\n", "\u00a0", ". \u3000"]),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "x.", "日", "abc "]), st.integers(500, 3000)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(parts=st.lists(_part, min_size=20, max_size=300), chunk=st.integers(16, 800), piece=st.integers(0, 4000),
       unsynced=st.integers(0, 10000), workers=st.integers(1, 3))
def test_workers_give_the_ids_of_the_whole_text(
    parts: list[str], chunk: int, piece: int, unsynced: int, workers: int, tokenizer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    text = "".join(parts)
    path = tmp_path_factory.mktemp("t") / "doc.txt"
    path.write_text(text, encoding="utf-8")
    saved = reader.CHUNK_BYTES, tokenize_pool.PIECE_CHARS, tokenize_pool.MAX_UNSYNCED
    os.environ["LONGQA_TOKENIZER_WORKERS"] = str(workers)
    reader.CHUNK_BYTES, tokenize_pool.PIECE_CHARS, tokenize_pool.MAX_UNSYNCED = chunk, piece, unsynced
    try:
        pieces = list(token_stream(tokenizer, Document(str(path), None)))
    finally:
        reader.CHUNK_BYTES, tokenize_pool.PIECE_CHARS, tokenize_pool.MAX_UNSYNCED = saved
        del os.environ["LONGQA_TOKENIZER_WORKERS"]
    assert [int(i) for p in pieces for i in p] == encode_text(tokenizer, text)
    if len(text.encode()) > tokenize_pool.SEQUENTIAL_CHUNKS * chunk:  # the first chunks in this thread, then workers
        assert isinstance(pieces[-1], np.ndarray) and pieces[-1].dtype == np.int64


def test_a_big_file_gives_the_same_ids_with_and_without_workers(tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.txt"
    path.write_text(SAMPLE * 3)  # 4.2 MB: past SEQUENTIAL_CHUNKS of the real chunk size
    monkeypatch.setenv("LONGQA_TOKENIZER_WORKERS", "0")
    sequential = list(token_stream(tokenizer, Document(str(path), None)))
    assert all(isinstance(p, list) for p in sequential)
    monkeypatch.setenv("LONGQA_TOKENIZER_WORKERS", "2")
    pooled = list(token_stream(tokenizer, Document(str(path), None)))
    kinds = [type(p) for p in pooled]
    assert kinds == sorted(kinds, key=lambda k: k is np.ndarray) and kinds[0] is list and kinds[-1] is np.ndarray
    assert np.array_equal(np.concatenate(pooled), np.array([i for p in sequential for i in p]))


def test_text_without_sync_points_is_handed_on_with_the_splitter_state(
    tokenizer, tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokenize_pool, "MAX_UNSYNCED", 10_000)
    # A log: no sentence end, or none with a space close enough before it; sentences cut by length.
    line = "GET /a.b.c?x=1 200 " * 20 + "x" * 1200 + '."]' + "y" * 990 + "! "
    path = tmp_path / "log.txt"
    path.write_text(line * 40)
    assert ids_of(tokenizer, path) == encode_text(tokenizer, line * 40)


def test_small_documents_do_not_start_the_pool(tokenizer, tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokenize_pool, "_pool", None)
    path = tmp_path / "small.txt"
    path.write_text("Mary went home. " * 500)  # 8000 bytes: 2 chunks of 4096
    assert all(isinstance(p, list) for p in token_stream(tokenizer, Document(str(path), None)))
    assert tokenize_pool._pool is None
    path.write_text("Mary went home. " * 600)
    assert isinstance(list(token_stream(tokenizer, Document(str(path), None)))[-1], np.ndarray)
    assert tokenize_pool._pool is not None


def test_worker_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LONGQA_TOKENIZER_WORKERS", raising=False)
    assert 1 <= tokenize_pool.worker_count() <= 8
    monkeypatch.setenv("LONGQA_TOKENIZER_WORKERS", "0")
    assert tokenize_pool.worker_count() == 0
    for bad in ["-1", "two"]:
        monkeypatch.setenv("LONGQA_TOKENIZER_WORKERS", bad)
        with pytest.raises(InputError, match="LONGQA_TOKENIZER_WORKERS"):
            tokenize_pool.worker_count()


def test_workers_are_light_single_threaded_and_leave_ctrl_c_to_the_parent(tokenizer) -> None:
    pool = tokenize_pool._executor(tokenizer, 1)
    probe = ("sorted({'torch', 'transformers'} & set(__import__('sys').modules)), "
             "__import__('os').environ['TOKENIZERS_PARALLELISM'], "
             "__import__('signal').getsignal(__import__('signal').SIGINT) == __import__('signal').SIG_IGN")
    assert pool.submit(eval, probe).result(timeout=60) == ([], "false", True)


def test_a_dead_worker_is_a_one_line_runtime_failure(tokenizer, tmp_path: Path, small: None) -> None:
    path = tmp_path / "doc.txt"
    path.write_text(SAMPLE[:200_000])
    stream = token_stream(tokenizer, Document(str(path), None))
    while not isinstance(next(stream), np.ndarray):  # until the workers have started
        pass
    os.kill(tokenize_pool._pool[2].submit(os.getpid).result(), signal.SIGKILL)
    with pytest.raises(RuntimeFailure, match="^a tokenizer worker process died or could not start$"):
        list(stream)
    assert ids_of(tokenizer, path) == encode_text(tokenizer, SAMPLE[:200_000])  # a new pool


def test_a_reader_stopping_early_leaves_the_pool_ready(tokenizer, tmp_path: Path, small: None) -> None:
    path = tmp_path / "doc.txt"
    path.write_text(SAMPLE[:200_000])
    stream = token_stream(tokenizer, Document(str(path), None))
    while not isinstance(next(stream), np.ndarray):
        pass
    t = time.perf_counter()
    stream.close()
    assert time.perf_counter() - t < 1 and tokenize_pool._readers == 0
    assert ids_of(tokenizer, path) == encode_text(tokenizer, SAMPLE[:200_000])


def test_a_reading_error_comes_after_the_ids_read_before_it(tokenizer, tmp_path: Path, small: None) -> None:
    text = SAMPLE[:300_000]
    blob = gzip.compress(text.encode())
    path = tmp_path / "cut.gz"
    path.write_bytes(blob[: len(blob) // 2])
    got: list[int] = []
    with pytest.raises(InputError, match="damaged or truncated gzip"):
        for piece in token_stream(tokenizer, Document(str(path), None)):
            got += [int(i) for i in piece]
    assert 1000 < len(got) and got == encode_text(tokenizer, text)[: len(got)]


def test_ctrl_c_while_workers_run_prints_no_traceback_and_exits(tokenizer, tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text(SAMPLE * 3)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    script = tmp_path / "read.py"
    script.write_text(textwrap.dedent(
        f"""
        import sys, time
        import numpy as np
        from longqa.input.reader import Document, token_stream
        from longqa.input.text import load_tokenizer

        if __name__ == "__main__":
            tok = load_tokenizer({str(tmp_path / "tokenizer.json")!r})
            try:
                for piece in token_stream(tok, Document({str(tmp_path / "big.txt")!r}, None)):
                    if isinstance(piece, np.ndarray):  # from a worker: they are all up
                        print("reading", flush=True)
                    time.sleep(0.05)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
                sys.exit(130)
        """
    ))
    # A test run started in the background (`cmd &` in a script) has SIGINT ignored, and the script would
    # inherit that and read to the end (exit 0): a terminal's reader has the default.
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "LONGQA_TOKENIZER_WORKERS": "2"}, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert p.stdout.readline() == b"reading\n"
    os.killpg(p.pid, signal.SIGINT)  # as a terminal does: to the whole process group, workers included
    out, err = p.communicate(timeout=60)
    assert (p.returncode, out, err.decode()) == (130, b"interrupted\n", "")

