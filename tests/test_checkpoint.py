"""The shipped checkpoint, on CPU, on a fixed set of generated QA1-QA5 documents of ~2K tokens.

A regression in the model code, the tokenizer, the encoding or the reader shows up here as lost accuracy.
The floors sit a little under what the checkpoint measured on this set (20 per task; QA1 95, QA2 70,
QA3 45, QA4 100, QA5 100 %). The issue's target (>= 90 % on every task) is NOT met by this checkpoint
for QA2 and QA3; see weights/longqa-armt-small/README.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from longqa.engine import Engine
from longqa.lab.eval import evaluate
from longqa.lab.generate.noise import SAMPLE as NOISE_SAMPLE

pytestmark = pytest.mark.slow  # subprocesses / the real checkpoint on CPU: minutes

WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "longqa-armt-small"
FLOORS = {"qa1": 0.85, "qa2": 0.60, "qa3": 0.35, "qa4": 0.90, "qa5": 0.90}


@pytest.fixture(scope="module")
def cells():
    torch.manual_seed(0)
    engine = Engine(WEIGHTS, "cpu")
    return {c.task: c for c in evaluate(engine, [NOISE_SAMPLE], list(FLOORS), [2000], n=20, seed=0, batch=20)}


@pytest.mark.parametrize("task", list(FLOORS))
def test_accuracy_floor(cells, task: str) -> None:
    c = cells[task]
    print(f"{task}: {c.accuracy:.2f} (shortcut {c.last_mentioned:.2f})")
    assert c.accuracy >= FLOORS[task]


def test_beats_the_last_mentioned_shortcut(cells) -> None:
    assert sum(c.accuracy for c in cells.values()) > sum(c.last_mentioned for c in cells.values()) + 1.5
