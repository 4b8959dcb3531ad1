"""Token ids into segments: the steps lockstep builds from each document's segments for batched reading."""

from __future__ import annotations

import numpy as np

from longqa.engine import prefetch
from longqa.input.segments import Segmenter, lockstep


def test_lockstep_steps_are_each_documents_segments_and_ended_rows_drop_out() -> None:
    size = 4
    docs = [list(range(100, 122)), list(range(200, 210)), list(range(300, 317))]  # 5, 2 and 4 segments, then a tail
    # All steps are collected before checking: a step whose ids a later step overwrote would show.
    steps = list(prefetch(lockstep([Segmenter(size).push(d) for d in docs])))
    assert [rows for rows, _ in steps] == [[0, 1, 2], [0, 1, 2], [0, 2], [0, 2], [0]]
    for k, (rows, segments) in enumerate(steps):
        assert all(s.dtype == np.int64 for s in segments)
        assert [s.tolist() for s in segments] == [docs[r][k * size : (k + 1) * size] for r in rows]
