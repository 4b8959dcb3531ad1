"""Tokenising a big document in worker processes: sentence splitting and BPE on several cores, in order.

The text is cut at sync points (text.next_sync) into pieces of about PIECE_CHARS characters, which
workers split and encode on their own; their ids, taken back in order, are text.encode_text of the whole.
This also keeps the splitter, a Python loop, from holding the GIL of the process that drives the GPU.
The first SEQUENTIAL_CHUNKS chunks of a document are tokenised in the calling thread: a small document
needs no pool, and a big one has its first ids while the pool starts.

Workers come from a forkserver and, as with any multiprocessing start method but fork, each one imports
the main script again: a script that reads big documents needs `if __name__ == "__main__":`, and its
top-level imports (torch...) are paid in every worker. `longqa` and `python -m longqa` import little.

Environment: LONGQA_TOKENIZER_WORKERS, the number of worker processes (default min(8, cores - 2), at
least 1); 0 tokenises every document in the calling thread (text.encode_stream).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import chain, islice
from typing import TYPE_CHECKING

import numpy as np

from longqa.errors import InputError, LongQAError, RuntimeFailure
from longqa.input.text import SentenceSplitter, cut_at_sync_points, encode_sentences, encode_stream

if TYPE_CHECKING:
    from tokenizers import Tokenizer

SEQUENTIAL_CHUNKS = 2
PIECE_CHARS = 1 << 18  # fewer, larger jobs: each costs a round trip to a worker
# Text without a sync point (a log) is handed on with the splitter's state past this: it bounds the memory
# of a document and the longest job, which a Ctrl-C waits for (workers finish their job, then exit).
MAX_UNSYNCED = 1 << 21

_lock = threading.Lock()
_pool: tuple[Tokenizer, int, ProcessPoolExecutor] | None = None  # made on first use, kept for later documents
_readers = 0  # documents reading through the pool now (engine.read reads many in lockstep): they share its read-ahead
_worker_tokenizer: Tokenizer | None = None  # in a worker


def worker_count() -> int:
    value = os.environ.get("LONGQA_TOKENIZER_WORKERS", "")
    if not value:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, min(8, cores - 2))
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise InputError(f"LONGQA_TOKENIZER_WORKERS must be a number of processes (0 or more), not {value!r}")
    return n


def encode_piece(tokenizer: Tokenizer, text: str, final: bool) -> tuple[np.ndarray, str]:
    """Ids of a piece that starts at a cut (an int64 array: pickled as one copy) and, unless final, the
    splitter's tail after it."""
    splitter = SentenceSplitter()
    sentences = splitter.feed(text) + (splitter.finish() if final else [])
    ids = encode_sentences(tokenizer, sentences)
    return np.fromiter(chain.from_iterable(ids), np.int64, sum(map(len, ids))), splitter.tail


def _start_worker(tokenizer_json: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle, not every worker's to print
    # A worker waits for jobs forever: if the parent dies without shutting the pool down (killed, or
    # interrupted while starting it), nothing else would end it.
    parent = multiprocessing.parent_process()
    threading.Thread(target=lambda: (parent.join(), os._exit(1)), daemon=True).start()  # type: ignore[union-attr]
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker: the workers are the parallelism
    from tokenizers import Tokenizer

    global _worker_tokenizer
    _worker_tokenizer = Tokenizer.from_str(tokenizer_json)


def _encode(text: str, final: bool) -> tuple[np.ndarray, str]:
    return encode_piece(_worker_tokenizer, text, final)  # type: ignore[arg-type]


def _executor(tokenizer: Tokenizer, workers: int) -> ProcessPoolExecutor:
    global _pool
    if _pool is None or _pool[0] is not tokenizer or _pool[1] != workers:
        # A pool replaced here shuts down when its last reader lets go of it (concurrent.futures does).
        # Never fork: the parent has CUDA and threads. Under spawn, a worker that dies starting (a script
        # without `if __name__ == "__main__"`) can leave submit() waiting forever; the forkserver fails.
        ctx = multiprocessing.get_context("forkserver")
        pool = ProcessPoolExecutor(workers, ctx, initializer=_start_worker, initargs=(tokenizer.to_str(),))
        _pool = (tokenizer, workers, pool)
    return _pool[2]


def _submit(pool: ProcessPoolExecutor, text: str, final: bool) -> Future:
    # Workers start in submit(), on demand, and inherit Ctrl-C blocked from here: none can die of it (and
    # print a traceback) before _start_worker ignores it.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return pool.submit(_encode, text, final)
    except OSError as e:  # the forkserver lost a worker that was starting (see the module's docstring)
        raise BrokenProcessPool(e) from None
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def encode_pieces(tokenizer: Tokenizer, chunks: Iterable[str]) -> Iterator[list[int] | np.ndarray]:
    """Token ids of a text given in chunks, in pieces (lists, or int64 arrays from the workers): exactly
    text.encode_text of the whole text. The pool, made once per process, exits with the interpreter
    (concurrent.futures joins it then; pieces not started when a reader stops are cancelled)."""
    workers = worker_count()
    if not workers:
        yield from encode_stream(tokenizer, chunks)
        return
    chunks = iter(chunks)
    splitter = SentenceSplitter()  # the first chunks in this thread: a small document needs no pool
    yield from encode_stream(tokenizer, islice(chunks, SEQUENTIAL_CHUNKS), splitter=splitter)
    more = next(chunks, None)
    if more is None:
        yield from encode_stream(tokenizer, [splitter.tail])
    else:
        pieces = cut_at_sync_points(chain([splitter.tail, more], chunks), PIECE_CHARS, MAX_UNSYNCED)
        yield from _pooled(tokenizer, workers, pieces)


def _pooled(tokenizer: Tokenizer, workers: int, pieces: Iterator[tuple[str, bool]]) -> Iterator[np.ndarray]:
    global _pool, _readers
    with _lock:
        pool = _executor(tokenizer, workers)
        _readers += 1
    inflight: deque[Future] = deque()
    tail: str | Future = ""  # the splitter's tail the next piece starts with: a job's after an unsynced piece
    try:
        error = None
        try:
            for text, final in pieces:
                if isinstance(tail, Future):
                    tail = tail.result()[1]
                inflight.append(_submit(pool, tail + text, final))
                tail = "" if final else inflight[-1]
                while len(inflight) > max(1, 2 * workers // _readers):
                    yield inflight.popleft().result()[0]
        except LongQAError as e:  # a reading error comes after the ids of the text read before it
            error = e
        while inflight:
            yield inflight.popleft().result()[0]
        if error:
            raise error
    except BrokenProcessPool:
        with _lock:
            if _pool and _pool[2] is pool:
                _pool = None
        raise RuntimeFailure("a tokenizer worker process died or could not start") from None
    finally:
        with _lock:
            _readers -= 1
        for f in inflight:
            f.cancel()
