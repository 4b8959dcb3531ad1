"""BABILong samples: a bAbI story's facts hidden, in order, in a contiguous run of real-text sentences.

Everything is tokenised sentence by sentence with longqa.text, so a haystack's ids are exactly what
text.encode_text gives on its sentences joined by spaces (or newlines, as to_text writes them).
"""

from __future__ import annotations

import gzip
import lzma
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from longqa.input import text
from longqa.lab.generate.babi import Sample

if TYPE_CHECKING:
    from tokenizers import Tokenizer

_LENGTH = re.compile(r"(\d+)([KM]?)")
_SCALE = {"": 1, "K": 1_000, "M": 1_000_000}


def parse_length(name: str | int) -> int:
    """Token count of a length name: decimal thousands/millions ("0K", "4K", "128K", "1M", "10M") or an int."""
    if isinstance(name, int):
        if name < 0:
            raise ValueError(f"length must be >= 0, got {name}")
        return name
    m = _LENGTH.fullmatch(name.strip().upper())
    if not m:
        raise ValueError(
            f"bad length {name!r}: give a token count (e.g. 4096) or thousands/millions of tokens, "
            "decimal (e.g. 0K, 4K, 128K, 1M, 10M)"
        )
    return int(m[1]) * _SCALE[m[2]]


def _open_text(path: Path) -> TextIO:
    opener = {".xz": lzma.open, ".gz": gzip.open}.get(path.suffix, open)
    return opener(path, "rt", encoding="utf-8")  # type: ignore[operator]


def _self_terminated(sentence: str) -> bool:
    # A sentence that would merge with whatever follows it (a paragraph end without . ! ?, an over-long
    # cut) would re-split differently once placed in a context, breaking "context ids == encode_text".
    return text.split_sentences(sentence + " x") == [sentence, "x"]


class NoiseBank:
    """Sentences of real text (one paragraph per input line) with their token ids, kept compactly.

    Sentences of fewer than min_tokens tokens are dropped, as BABILong skips short noise sentences, and
    so are sentences without a sentence end (see _self_terminated).
    """

    def __init__(
        self,
        paths: str | Path | Iterable[str | Path],
        tokenizer: Tokenizer,
        min_tokens: int = 10,
        batch: int = 4096,
    ) -> None:
        self.sentences: list[str] = []
        chunks: list[np.ndarray] = []
        lengths: list[int] = []
        pending: list[str] = []

        def flush() -> None:
            for s, ids in zip(pending, text.encode_sentences(tokenizer, pending)):
                if len(ids) >= min_tokens:
                    self.sentences.append(s)
                    chunks.append(np.asarray(ids, dtype=np.int32))
                    lengths.append(len(ids))
            pending.clear()

        for path in [paths] if isinstance(paths, (str, Path)) else paths:
            with _open_text(Path(path)) as f:
                for line in f:
                    pending += [s for s in text.split_sentences(line) if _self_terminated(s)]
                    if len(pending) >= batch:
                        flush()
        flush()
        if not self.sentences:
            raise ValueError(f"no noise sentences of >= {min_tokens} tokens in {paths!r}")
        self.lengths = np.asarray(lengths, dtype=np.int32)
        self.offsets = np.zeros(len(lengths) + 1, dtype=np.int64)  # sentence i is ids[offsets[i]:offsets[i+1]]
        np.cumsum(self.lengths, out=self.offsets[1:])
        self.ids = np.concatenate(chunks)
        self.n_tokens = int(self.offsets[-1])

    def __len__(self) -> int:
        return len(self.sentences)

    def sample_run(self, rng: random.Random, n_tokens: int) -> list[int]:
        """Indices of consecutive sentences from a random start (wrapping around, more than once if the
        bank is small) totalling >= n_tokens tokens; the shortest such run."""
        if n_tokens <= 0:
            return []
        n = len(self)
        start = rng.randrange(n)
        end_tok = int(self.offsets[start]) + n_tokens  # token position, counted on the repeated bank
        laps = (end_tok - 1) // self.n_tokens
        end = int(np.searchsorted(self.offsets, end_tok - laps * self.n_tokens, side="left"))
        return [(start + i) % n for i in range(laps * n + end - start)]

    def sentence_ids(self, rng: random.Random) -> list[int]:
        """Token ids of one random sentence (noise between the items of a dense training stream)."""
        i = rng.randrange(len(self))
        return self.ids[self.offsets[i] : self.offsets[i + 1]].tolist()

    def run_ids(self, run: list[int]) -> np.ndarray:
        """Concatenated ids of the given sentences, slicing each stretch of consecutive indices at once."""
        if not run:
            return np.zeros(0, dtype=np.int32)
        idx = np.asarray(run, dtype=np.int64)
        cuts = np.flatnonzero(np.diff(idx) != 1) + 1
        return np.concatenate(
            [self.ids[self.offsets[seg[0]] : self.offsets[seg[-1] + 1]] for seg in np.split(idx, cuts)]
        )


@dataclass(eq=False)  # no generated ==: on the ids array it would compare element by element
class Haystack:
    # int32 token ids: read as they are (reader.Segmenter), a quarter the memory of a list for a 1M context
    context_ids: np.ndarray
    sentences: list[str] | None  # None when built with keep_sentences=False (huge contexts)
    question: str
    answer: str
    task: str
    n_tokens: int
    fact_ends: np.ndarray  # index in context_ids of each fact's last token, in story order


def build(
    sample: Sample,
    bank: NoiseBank | None,
    tokenizer: Tokenizer,
    target_tokens: int,
    rng: random.Random,
    keep_sentences: bool = True,
) -> Haystack:
    """Hide sample's facts in noise so that facts + noise reach target_tokens (0: facts only).

    The noise run is the shortest that reaches the target, so the context exceeds it by less than one
    noise sentence (or is facts only, if they alone reach it). Facts keep story order and go at sorted
    random gaps between noise sentences; several may share a gap.
    """
    fact_ids = text.encode_sentences(tokenizer, sample.facts)
    need = target_tokens - sum(map(len, fact_ids))
    if need > 0 and bank is None:
        raise ValueError(f"target {target_tokens} tokens needs noise, but no NoiseBank was given")
    run = bank.sample_run(rng, need) if bank is not None and need > 0 else []
    gaps = sorted(rng.randint(0, len(run)) for _ in fact_ids)  # fact k goes before noise sentence gaps[k]

    noise = bank.run_ids(run) if bank is not None else np.zeros(0, dtype=np.int32)
    noise_at = np.zeros(len(run) + 1, dtype=np.int64)  # token offset of each gap within the noise
    if run:
        np.cumsum(bank.lengths[run], out=noise_at[1:])  # type: ignore[union-attr]
    pieces: list[np.ndarray] = []
    prev = 0
    for g, ids in zip(gaps, fact_ids):
        pieces += [noise[noise_at[prev] : noise_at[g]], np.asarray(ids, dtype=np.int32)]
        prev = g
    pieces.append(noise[noise_at[prev] :])
    context = np.concatenate(pieces)
    fact_ends = np.cumsum([len(p) for p in pieces])[1::2] - 1  # pieces alternate noise, fact, ..., noise

    sentences: list[str] | None = None
    if keep_sentences:
        noise_text = [bank.sentences[i] for i in run] if bank is not None else []
        sentences, prev = [], 0
        for g, fact in zip(gaps, sample.facts):
            sentences += noise_text[prev:g] + [fact]
            prev = g
        sentences += noise_text[prev:]
    return Haystack(context, sentences, sample.question, sample.answer, sample.task, len(context), fact_ends)


def to_text(haystack: Haystack) -> str:
    """The context, one sentence per line; text.encode_text of it gives haystack.context_ids again."""
    if haystack.sentences is None:
        raise ValueError("haystack was built with keep_sentences=False; it has no sentences to write")
    return "".join(s + "\n" for s in haystack.sentences)
