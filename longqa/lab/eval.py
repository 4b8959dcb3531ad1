"""The evaluator: BABILong-style accuracy per task x length, with the shortcut baselines beside it.

Documents are generated from a seed (so every checkpoint is scored on the same set), read through the
same Engine that `ask` uses, many documents per forward, and scored with BABILong's rule.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from longqa.distributed import gather_interleaved
from longqa.engine import Engine
from longqa.lab.generate import babi
from longqa.lab.generate.babi_stories import qa5_case
from longqa.lab.generate.haystack import Haystack, NoiseBank, build
from longqa.questions import normalize_question

if TYPE_CHECKING:
    from tokenizers import Tokenizer


@dataclass
class Cell:
    task: str
    length: int  # target context tokens
    n: int
    accuracy: float
    last_mentioned: float  # shortcut: the last label mentioned in the story facts
    random_mentioned: float  # a random label among those in the facts
    mean_tokens: float
    seconds: float
    # One per document, in order: question, expected, answer, correct. Checkpoints scored on the same seed
    # see the same documents, so two evals can be compared document by document.
    documents: list[dict] = field(default_factory=list)


def mentioned_labels(task: str, facts: list[str], question: str) -> list[str]:
    """Task labels in the facts, in order, leaving out those in the question (as scoring does)."""
    labels = {label.lower(): label for label in babi.LABELS[task]}
    asked = set(re.findall(r"[a-z]+", question.lower()))
    words = [w for f in facts for w in re.findall(r"[a-z]+", f.lower())]
    return [labels[w] for w in words if w in labels and w not in asked]


def qa5_breakdown(cell: Cell) -> str:
    """A QA5 cell's accuracy per question form, and on the documents whose asked-about give is not the story's
    last fact, or not its last give."""
    docs = cell.documents

    def acc(sel: list[dict]) -> str:
        return f"{100 * sum(d['correct'] for d in sel) / len(sel):.1f} (n={len(sel)})" if sel else "– (n=0)"

    forms = [f"'{form}' {acc([d for d in docs if d['form'] == k])}" for k, (form, _) in enumerate(babi.QA5_FORMS)]
    return (f"qa5 {length_name(cell.length)} by form: {'; '.join(forms)}. Facts after the asked-about give: "
            f"{acc([d for d in docs if d['facts_after'] > 0])}; gives after it: {acc([d for d in docs if d['gives_after'] > 0])}")


def draw_documents(
    bank: NoiseBank,
    tokenizer: Tokenizer,
    task: str,
    length: int,
    n: int,
    seed: int,
    batch: int,
    wording: babi.Wording = babi.BABI,
) -> Iterator[tuple[list[babi.Sample], list[Haystack]]]:
    """A cell's documents, `batch` at a time: the stories and their haystacks. They depend on seed and batch
    only, so an eval's documents can be drawn again to look at its answers (training/wrong_answers.py).
    Another wording than bAbI's asks a training curriculum's stories instead (training/by_case.py)."""
    rng = random.Random(f"{seed}-{task}-{length}")
    for first in range(0, n, batch):
        samples = [babi.generate(task, rng, wording) for _ in range(min(batch, n - first))]
        yield samples, [build(s, bank, tokenizer, length, rng, keep_sentences=False) for s in samples]


def evaluate_cell(
    engine: Engine,
    bank: NoiseBank,
    task: str,
    length: int,
    n: int,
    seed: int,
    batch: int,
    rank: int = 0,
    world: int = 1,
    prefix: int = 0,
    wording: babi.Wording = babi.BABI,
) -> Cell:
    """One task x length cell, read `batch` documents at a time. With world > 1 (torchrun) every rank
    draws the same documents and reads every world-th one of each batch (so batch / world per forward);
    every rank gathers every answer. The documents depend on seed and batch only, so
    the cell is the same on any number of GPUs. prefix > 0 reads that many tokens of extra noise before
    each document (same documents, drawn from their own generator), to test an aged memory."""
    base_rng = random.Random(f"baseline-{seed}-{task}-{length}")
    prefix_rng = random.Random(f"prefix-{seed}-{task}-{length}-{prefix}")
    last = rand = tokens = 0
    questions: list[tuple[str, str]] = []  # (question, expected) of every document
    cases: list[dict] = []  # QA5: each document's question form and later gives (qa5_case)
    answers: list[str] = []  # every document's, whichever rank read it
    start = time.perf_counter()
    for samples, hays in draw_documents(bank, engine.tokenizer, task, length, n, seed, batch, wording):
        pre = [bank.run_ids(bank.sample_run(prefix_rng, prefix)) if prefix else [] for _ in samples]
        questions += [(s.question, s.answer) for s in samples]
        cases += [qa5_case(s) if task == "qa5" else {} for s in samples]
        mine = list(range(rank, len(samples), world))
        said: list[str] = []
        if mine:
            memories = [engine.new_memory() for _ in mine]
            engine.read_ids(memories, [[pre[i], hays[i].context_ids] for i in mine])
            said = engine.answer_pairs([(m, normalize_question(samples[i].question)) for m, i in zip(memories, mine)])
        answers += gather_interleaved(said)
        for s, h, p in zip(samples, hays, pre):  # the baselines need no model: every rank scores every document
            mentioned = mentioned_labels(task, s.facts, s.question)
            last += bool(mentioned) and mentioned[-1] == s.answer
            rand += bool(mentioned) and base_rng.choice(sorted(set(mentioned))) == s.answer
            tokens += len(p) + h.n_tokens
    documents = [
        {"question": q, "expected": e, "answer": a, "correct": babi.score(task, q, a, e), **case}
        for (q, e), a, case in zip(questions, answers, cases)
    ]
    correct = sum(d["correct"] for d in documents)
    return Cell(task, length, n, correct / n, last / n, rand / n, tokens / n, time.perf_counter() - start, documents)


def evaluate(
    engine: Engine,
    noise: list[str],
    tasks: list[str],
    lengths: list[int],
    n: int,
    seed: int = 0,
    batch: int = 64,
    on_cell: Callable[[Cell], None] | None = None,
    rank: int = 0,
    world: int = 1,
    prefix: int = 0,
) -> list[Cell]:
    """Every task x length cell (see evaluate_cell)."""
    bank = NoiseBank(noise, engine.tokenizer)
    cells = []
    for length in lengths:
        for task in tasks:
            cell = evaluate_cell(engine, bank, task, length, n, seed, batch, rank, world, prefix)
            cells.append(cell)
            if on_cell:
                on_cell(cell)
    return cells


def length_name(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}K" if n % 1000 == 0 else str(n)


def table(cells: list[Cell]):
    """A Rich table: tasks down, lengths across, accuracy % with the last-mentioned shortcut in brackets."""
    from rich.table import Table

    lengths = sorted({c.length for c in cells})
    tasks = sorted({c.task for c in cells})
    t = Table(title="exact match % (shortcut: last label in the facts)")
    t.add_column("task")
    for length in lengths:
        t.add_column(length_name(length), justify="right")
    by = {(c.task, c.length): c for c in cells}
    for task in tasks:
        row = [task]
        for length in lengths:
            c = by.get((task, length))
            row.append(f"{100 * c.accuracy:.1f} ({100 * c.last_mentioned:.0f})" if c else "")
        t.add_row(*row)
    means = ["mean"]
    for length in lengths:
        accs = [by[(task, length)].accuracy for task in tasks if (task, length) in by]
        means.append(f"{100 * sum(accs) / len(accs):.1f}")
    t.add_row(*means)
    return t


def write_json(cells: list[Cell], path: str | Path, meta: dict) -> None:
    Path(path).write_text(json.dumps({**meta, "cells": [asdict(c) for c in cells]}, indent=1))


def plot(cells: list[Cell], png: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for task in sorted({c.task for c in cells}):
        pts = sorted((c.length, c.accuracy) for c in cells if c.task == task)
        xs = [max(p[0], 100) for p in pts]  # 0K (facts only) drawn at the left edge of the log axis
        ax.plot(xs, [100 * p[1] for p in pts], marker="o", label=task)
    ax.set_xscale("log")
    ax.set_ylim(0, 102)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("exact match %")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
