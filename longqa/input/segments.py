"""Token ids into fixed-size segments: one document's stream (Segmenter), many documents in step (lockstep).

A segment is what the model reads at once (ARMTConfig.segment_len tokens). The unfinished tail of a document
is kept as pending tokens, so that more text can be appended to a saved memory exactly as if read in one go.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class Segmenter:
    """Cuts a stream of token ids into segments of exactly `size`; keeps the unfinished tail as `pending`.

    Segments are int64 arrays, views of one buffer per converted part: each Python int is converted once
    (arrays from the tokenizer workers not at all), and a step of many documents is then one copy of machine
    integers (engine.lockstep). A list is converted one segment's worth at a time, not whole: a step of many
    documents needs only their first segments, and converting every document's whole list before the first
    step kept the GPU idle for 75-270 ms per batched read of 16K-token documents (BENCHMARKS.md)."""

    def __init__(self, size: int, pending: list[int] | None = None) -> None:
        self.size = size
        self._tail = np.array(pending or [], dtype=np.int64)

    @property
    def pending(self) -> list[int]:
        return self._tail.tolist()

    def push(self, ids: list[int] | np.ndarray) -> Iterator[np.ndarray]:
        if isinstance(ids, np.ndarray):
            yield from self._cut(ids)
            return
        for i in range(0, len(ids), self.size):
            part = ids[i : i + self.size]
            # fromiter reads a list of ints faster than np.asarray, which first scans it for shape and type
            yield from self._cut(np.fromiter(part, np.int64, len(part)))

    def _cut(self, new: np.ndarray) -> Iterator[np.ndarray]:
        buf = np.concatenate([self._tail, new], dtype=np.int64)
        n = len(buf) // self.size * self.size
        for i in range(0, n, self.size):
            yield buf[i : i + self.size]
        self._tail = buf[n:]


def lockstep(streams: list[Iterator[np.ndarray]]) -> Iterator[tuple[list[int], list[np.ndarray]]]:
    """(rows, segments) per step: the next segment of every document that still has one."""
    live = list(range(len(streams)))
    while live:
        batch, rows = [], []
        for i in live:
            segment = next(streams[i], None)
            if segment is not None:
                batch.append(segment)
                rows.append(i)
        live = rows
        if rows:
            yield rows, batch
