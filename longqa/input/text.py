"""The ONE way text becomes token ids, shared by the reader, the data generator and the trainer.

Text is split into sentences by a small streaming rule-based splitter, whitespace inside a sentence is
collapsed to single spaces, and every sentence is tokenised on its own as " " + sentence. Training
builds haystacks sentence by sentence, so inference must cut user text the same way (armt.md: this
matters for accuracy). The splitter is a pure function of the characters seen since the last cut, so
feeding text in chunks of any size gives exactly the sentences of the whole text.

Some cuts happen whatever came before them (sync points, see next_sync): text cut there can be split and
encoded piece by piece, in any order or process, and the pieces' ids add up to those of the whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer

# A sentence ends at . ! or ? (plus up to 3 closing quotes/brackets) followed by whitespace.
_BOUNDARY = re.compile(r"[.!?][\"'\u201d\u2019)\]]{0,3}(?=\s)")
_SPACE = re.compile(r"\s+")
# Longest sentence; longer runs (logs, one-line files) are cut at the last whitespace before it.
MAX_SENTENCE_CHARS = 1000
# A boundary needs up to 4 characters after its last kept one: cut only once they are all here.
_LOOKAHEAD = 5
# A forced cut goes to the last of these in its window (not to other whitespace); see next_sync.
_CUTTABLE = re.compile("[ \n\t]")
_SYNC_REACH = 16  # see next_sync: up to MAX_SENTENCE_CHARS - 3 is safe (test_text finds one more unsafe)

PAD, GEN, EOS = "[PAD]", "[GEN]", "[EOS]"
SPECIAL_TOKENS = [PAD, GEN, EOS]


def normalize(sentence: str) -> str:
    return _SPACE.sub(" ", sentence).strip()


class SentenceSplitter:
    """Incremental splitter: feed() chunks, get complete sentences; finish() flushes the rest."""

    def __init__(self) -> None:
        self._buf = ""

    @property
    def tail(self) -> str:
        """The text since the last cut: what finish() would flush, and what feed() starts from."""
        return self._buf

    def feed(self, chunk: str) -> list[str]:
        self._buf += chunk
        return self._drain(final=False)

    def finish(self) -> list[str]:
        out = self._drain(final=True)
        rest = normalize(self._buf)
        self._buf = ""
        return out + ([rest] if rest else [])

    def _drain(self, final: bool) -> list[str]:
        out: list[str] = []
        buf = self._buf
        start = 0
        while True:
            # Leading whitespace never belongs to a sentence.
            while start < len(buf) and buf[start].isspace():
                start += 1
            m = _BOUNDARY.search(buf, start, start + MAX_SENTENCE_CHARS + _LOOKAHEAD)
            if m and m.end() - start <= MAX_SENTENCE_CHARS:
                end = m.end()
            elif len(buf) - start > MAX_SENTENCE_CHARS + (0 if final else _LOOKAHEAD):
                window = buf[start : start + MAX_SENTENCE_CHARS]
                cut = max(window.rfind(" "), window.rfind("\n"), window.rfind("\t"))  # _CUTTABLE
                end = start + (cut if cut > 0 else MAX_SENTENCE_CHARS)
            else:
                break
            sentence = normalize(buf[start:end])
            if sentence:
                out.append(sentence)
            start = end
        self._buf = buf[start:]
        return out


def split_sentences(text: str) -> list[str]:
    splitter = SentenceSplitter()
    return splitter.feed(text) + splitter.finish()


def next_sync(text: str, pos: int = 0) -> int | None:
    """End of the first sync point among the boundaries that begin at pos or later (None if none does).

    A sync point is the end of a boundary with " ", "\\n" or "\\t" among the _SYNC_REACH characters before its
    punctuation: the splitter cuts there whatever it cut before. From a start before the boundary it cuts at
    the first boundary (this one at the latest) unless a forced cut comes first. A forced cut goes to the last
    of those three characters in its window, never inside a boundary; only a window with none of them is cut
    at its full length, which may fall between the punctuation and its closers, and such a window would hold
    the _SYNC_REACH characters before the punctuation."""
    for m in _BOUNDARY.finditer(text, pos):
        if _CUTTABLE.search(text, max(0, m.start() - _SYNC_REACH), m.start()):
            return m.end()
    return None


def cut_at_sync_points(chunks: Iterable[str], min_chars: int, max_unsynced: int) -> Iterator[tuple[str, bool]]:
    """A text given in chunks, as pieces that each start at a cut: (text, True) ends at the first sync point
    after min_chars (or at the end) and is tokenised on its own; (text, False) is cut anywhere, after more
    than max_unsynced characters without a sync point, and the splitter's tail after it begins the next piece."""
    pending, scan = "", 0  # scan: where the boundaries not looked at yet may begin
    for chunk in chunks:
        pending += chunk
        start = 0
        while end := next_sync(pending, max(scan, start + min_chars)):
            yield pending[start:end], True
            start = end
        pending = pending[start:]
        if len(pending) > max_unsynced:
            yield pending, False
            pending = ""
        scan = max(0, len(pending) - _LOOKAHEAD)  # a boundary at the very end may not be whole yet
    yield pending, True


def encode_sentences(tokenizer: Tokenizer, sentences: list[str]) -> list[list[int]]:
    """Token ids of each (already normalised) sentence, tokenised independently."""
    if not sentences:
        return []
    # The fast variant skips the character offsets, which we never read; the ids are the same (BENCHMARKS.md).
    return [e.ids for e in tokenizer.encode_batch_fast([" " + s for s in sentences], add_special_tokens=False)]


def encode_text(tokenizer: Tokenizer, text: str) -> list[int]:
    return [i for ids in encode_sentences(tokenizer, split_sentences(text)) for i in ids]


def encode_stream(
    tokenizer: Tokenizer, chunks: Iterable[str], batch: int = 256, splitter: SentenceSplitter | None = None
) -> Iterator[list[int]]:
    """Token ids of a text given in chunks; yields lists of ids (one per group of sentences). With a splitter
    given, the text goes on after these chunks: the splitter keeps its tail, unflushed."""
    flush = splitter is None
    splitter = splitter or SentenceSplitter()
    pending: list[str] = []
    for chunk in chunks:
        pending += splitter.feed(chunk)
        if len(pending) >= batch:
            yield [i for ids in encode_sentences(tokenizer, pending) for i in ids]
            pending = []
    if flush:
        pending += splitter.finish()
    if pending:
        yield [i for ids in encode_sentences(tokenizer, pending) for i in ids]


def question_ids(tokenizer: Tokenizer, question: str) -> list[int]:
    """A question is one normalised sentence followed by GEN, exactly as in training."""
    return encode_sentences(tokenizer, [normalize(question)])[0] + [tokenizer.token_to_id(GEN)]


def load_tokenizer(path: str | Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))


def decode(tokenizer: Tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True).strip()
