"""Training examples: bAbI stories (generated, or the real bAbI training stories) as token ids with labels,
and batches of them.

Every example is a context, cut into segments that write memory, followed by question segments that only
read it, exactly as `longqa ask` reads and answers. Two kinds of context:
- dense: a story stream where a question + GEN + answer + EOS follows every 1-3 facts (inline questions),
  with a share of noise sentences between items; the loss is on every inline answer;
- single: BABILong proper, the facts hidden at random gaps in a run of real noise; only the questions after
  the context (final questions) and those asked from the memory after a segment (segment questions) are
  supervised.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from tokenizers import Tokenizer

from longqa.input.text import EOS, GEN, encode_sentences
from longqa.lab.generate import babi
from longqa.lab.generate.haystack import NoiseBank, build

if TYPE_CHECKING:
    from longqa.lab.train import Stage

IGNORE = -100  # label of a position that is not supervised (torch's cross_entropy default)
# Question segments are padded to a multiple of this width. Compiled training specializes its question graph on
# the width (its backward does, even with dynamic shapes), so every new longest question compiled a new graph
# mid-run; a few widths mean a few graphs. Padding is exact: keys past a row's length are masked, and the
# causal convolution and attention never look right.
QUESTION_WIDTH_STEP = 8
Tokens = tuple[list[int], list[int]]  # token ids, labels


@dataclass
class Example:
    task: str
    ids: list[int]  # the context
    labels: list[int]  # the inline answers' labels, IGNORE elsewhere
    finals: list[Tokens]  # questions read from the memory after the whole context
    mids: list[tuple[int, list[int], list[int]]]  # (segment, ids, labels): questions read after that segment


@dataclass
class Questions:
    """Question segments of a batch, one row each, padded: which context row's memory each reads (row) and,
    for segment questions, after which segment (seg)."""

    ids: torch.Tensor  # (N, Q)
    labels: torch.Tensor  # (N, Q)
    lengths: torch.Tensor  # (N,)
    row: torch.Tensor  # (N,)
    seg: torch.Tensor  # (N,); -1 for final questions

    @classmethod
    def of(cls, rows: list[tuple[int, int, list[int], list[int]]], pad: int) -> Questions:
        """From (context row, segment, ids, labels) tuples."""
        longest = max((len(q) for _, _, q, _ in rows), default=1)
        Q = -(-longest // QUESTION_WIDTH_STEP) * QUESTION_WIDTH_STEP
        out = cls(
            torch.full((len(rows), Q), pad),
            torch.full((len(rows), Q), IGNORE),
            torch.tensor([len(q) for _, _, q, _ in rows], dtype=torch.long),
            torch.tensor([r for r, _, _, _ in rows], dtype=torch.long),
            torch.tensor([s for _, s, _, _ in rows], dtype=torch.long),
        )
        for j, (_, _, q, la) in enumerate(rows):
            out.ids[j, : len(q)] = torch.tensor(q)
            out.labels[j, : len(la)] = torch.tensor(la)
        return out

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Questions:
        return Questions(*(fn(getattr(self, f.name)) for f in fields(self)))

    def select(self, index: torch.Tensor) -> Questions:
        return self.map(lambda t: t[index])


@dataclass
class Batch:
    """Contexts padded to whole segments, one row per example, and their question segments."""

    ids: torch.Tensor  # (B, T), T a multiple of the segment length
    labels: torch.Tensor  # (B, T)
    lengths: torch.Tensor  # (B,)
    finals: Questions
    mids: Questions
    task: torch.Tensor  # (len(finals),): index in babi.TASKS of each final question's example

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        """The batch with fn applied to every tensor (to a device, pinned...)."""
        parts = (getattr(self, f.name) for f in fields(self))
        return Batch(*(v.map(fn) if isinstance(v, Questions) else fn(v) for v in parts))

    def to(self, device: torch.device) -> Batch:
        return self.map(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> Batch:  # DataLoader(pin_memory=True) calls this
        return self.map(lambda t: t.pin_memory())


def collate(examples: list[Example], segment_len: int, pad: int) -> Batch:
    n_seg = max(math.ceil(len(e.ids) / segment_len) for e in examples)
    T = n_seg * segment_len
    batch = Batch(
        torch.full((len(examples), T), pad),
        torch.full((len(examples), T), IGNORE),
        torch.tensor([len(e.ids) for e in examples]),
        Questions.of([(i, -1, q, la) for i, e in enumerate(examples) for q, la in e.finals], pad),
        Questions.of([(i, s, q, la) for i, e in enumerate(examples) for s, q, la in e.mids], pad),
        torch.tensor([babi.TASKS.index(e.task) for e in examples for _ in e.finals]),
    )
    for i, e in enumerate(examples):
        batch.ids[i, : len(e.ids)] = torch.tensor(e.ids)
        batch.labels[i, : len(e.labels)] = torch.tensor(e.labels)
    return batch


class ExampleMaker:
    """Builds training examples with the project's one encoding (longqa.input.text)."""

    def __init__(self, tok: Tokenizer, bank: NoiseBank, segment_len: int, noise_share: float) -> None:
        self.tok, self.bank, self.S, self.noise_share = tok, bank, segment_len, noise_share
        self.gen, self.eos = tok.token_to_id(GEN), tok.token_to_id(EOS)

    def qa(self, question: str, answer: str) -> Tokens:
        """question GEN answer EOS, with labels on answer and EOS (predicted from GEN onwards)."""
        q, a = encode_sentences(self.tok, [question, answer])
        ids = q + [self.gen] + a + [self.eos]
        labels = [IGNORE] * len(q) + a + [self.eos] + [IGNORE]
        return ids, labels

    @staticmethod
    def real(rng: random.Random, stage: Stage) -> bool:
        """Whether the next story comes from the real bAbI training stories (Stage.real_stories)."""
        return stage.real_stories > 0 and rng.random() < stage.real_stories  # no draw at 0: streams as before

    def dense(self, rng: random.Random, task: str, n_tokens: int, stage: Stage) -> tuple[list[int], list[int], list[babi.QA]]:
        """A dense stream of about n_tokens context tokens: ids, the inline answers' labels, and the final
        questions: the first questions reached after n_tokens, which are valid at the end. With chance
        1 - stage.inline_questions a question before the end is left out."""
        ids: list[int] = []
        labels: list[int] = []
        n_facts = max(8, n_tokens // 8)
        if self.real(rng, stage):
            from longqa.lab.generate import babi_stories

            stream = babi_stories.dense_stream(task, rng, n_facts)
        else:
            stream = babi.dense_stream(task, rng, n_facts, stage.wording())
        inline = stage.inline_questions
        for item in stream:
            if isinstance(item, list) and len(ids) >= n_tokens:
                return ids, labels, item
            if isinstance(item, list) and inline < 1 and rng.random() >= inline:  # no draw at 1: streams as before
                continue
            if rng.random() < self.noise_share:
                noise = self.bank.sentence_ids(rng)
                ids += noise
                labels += [IGNORE] * len(noise)
            if isinstance(item, list):
                qa_ids, qa_labels = self.qa(*item[0])
            else:
                qa_ids = encode_sentences(self.tok, [item.text])[0]
                qa_labels = [IGNORE] * len(qa_ids)
            ids += qa_ids
            labels += qa_labels
        ids, labels, asked, _ = self.single(rng, task, n_tokens, replace(stage, segment_questions=0.0))
        return ids, labels, asked  # the stream ran out first (rare)

    def single(
        self, rng: random.Random, task: str, n_tokens: int, stage: Stage
    ) -> tuple[list[int], list[int], list[babi.QA], list[tuple[int, babi.QA]]]:
        """A BABILong example: a story's facts hidden in a noise run. Returned as `dense` returns it (no inline
        answers: all labels IGNORE), and with chance stage.segment_questions per segment boundary inside it, a
        (segment, question) that the story up to there answers."""
        mid = stage.segment_questions
        if self.real(rng, stage):
            from longqa.lab.generate import babi_stories

            sample = babi_stories.sample(task, rng, mid_story=bool(mid))
        else:
            sample = babi.generate(task, rng, stage.wording(), mid_story=bool(mid))
        hay = build(sample, self.bank, self.tok, n_tokens, rng, keep_sentences=False)
        mids = []
        for s in range(math.ceil(hay.n_tokens / self.S) - 1) if mid and sample.asked_after else ():
            last = int(np.searchsorted(hay.fact_ends, (s + 1) * self.S)) - 1  # the last fact that ends in segment <= s
            if last >= 0 and sample.asked_after[last] and rng.random() < mid:
                mids.append((s, rng.choice(sample.asked_after[last])))
        return hay.context_ids.tolist(), [IGNORE] * hay.n_tokens, [(sample.question, sample.answer), *sample.others], mids

    def example(self, rng: random.Random, stage: Stage, n_segments: int, task_weights: list[float] | None = None) -> Example:
        """One example of n_segments segments; its task drawn by task_weights (default: the stage's)."""
        task = rng.choices(babi.TASKS, weights=task_weights or stage.task_weights)[0]
        # Leave room so the context fits the drawn number of segments.
        n_tokens = rng.randint((n_segments - 1) * self.S + self.S // 4, n_segments * self.S - 16)
        mids: list[tuple[int, babi.QA]] = []
        if rng.random() < stage.dense:
            ids, labels, asked = self.dense(rng, task, n_tokens, stage)
        else:
            ids, labels, asked, mids = self.single(rng, task, n_tokens, stage)
        finals = asked[:1] + rng.sample(asked[1:], min(stage.final_questions, len(asked)) - 1)
        return Example(task, ids, labels, [self.qa(q, a) for q, a in finals], [(s, *self.qa(q, a)) for s, (q, a) in mids])
