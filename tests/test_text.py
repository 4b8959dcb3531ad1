"""Sentence splitting and tokenisation: streaming (any chunking, any read size) == the whole text at once."""

from __future__ import annotations

import os
import re
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from longqa.input import reader
from longqa.input.reader import Document, read_chunks, token_stream
from longqa.input.segments import Segmenter
from longqa.input.text import (
    GEN,
    MAX_SENTENCE_CHARS,
    SentenceSplitter,
    cut_at_sync_points,
    encode_sentences,
    encode_stream,
    encode_text,
    load_tokenizer,
    next_sync,
    normalize,
    question_ids,
    split_sentences,
)
from longqa.input.tokenize_pool import encode_piece

# ---- random texts ---------------------------------------------------------------------------------

_WORD_CHARS = "abcdeXYZ0123é日本ü😀"  # 1-, 2-, 3- and 4-byte UTF-8
_PUNCT = ".!?\"'\u201d\u2019)]"
_SPACES = [" ", "  ", "\n", "\n\n", "\t", " \r\n", "\u00a0", "\u3000"]

_word = st.text(alphabet=_WORD_CHARS, min_size=1, max_size=12)
_end = st.sampled_from([".", "!", "?", ".\"", ".'", "?\u201d", ".)", "!\")", ".\u2019\u201d)]", "...", ".\"\"\"\""])
_space = st.sampled_from(_SPACES)
_long_run = st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "日", "😀", "ab", "."]), st.integers(900, 2600))
_long_spaced = st.builds(lambda w, n: (w + " ") * n, _word, st.integers(50, 400))
_piece = st.one_of(_word, _word, _word, _end, _space, _space, _long_run, _long_spaced, st.sampled_from(_PUNCT))
texts = st.lists(_piece, max_size=60).map("".join)


# Texts that attack sync points: dense punctuation, closers and whitespace (also the kinds a forced cut does
# not look for), and runs of ~1000 characters without " ", "\n" or "\t" that end in a boundary, with a
# space just inside or just outside the reach of a sync point before the punctuation.
_CLOSERS = "\"'\u201d\u2019)]"
_DENSE = "ab.!?" + _CLOSERS + " \n\t\u00a0\r\x0b\u3000\x1cé日😀"
_run_to_boundary = st.builds(
    lambda a, sp, b, closers, ws: "x" * a + sp + "y" * b + "." + closers + ws,
    st.integers(0, 1100), st.sampled_from([" ", "\n", "\t", "\u00a0", "\r", ""]), st.integers(0, 24) | st.integers(990, 1003),
    st.text(alphabet=_CLOSERS, max_size=4), st.sampled_from([" ", "\n", "\u00a0", "\u3000", "\r\n", "z"]),
)
_hard_piece = st.one_of(
    _piece, st.text(alphabet=_DENSE, max_size=40), _run_to_boundary, _run_to_boundary,
    st.builds(lambda c, n: c * n, st.sampled_from(["x\u00a0", ".)", '."\r', "日."]), st.integers(1, 1100)),
)
hard_texts = st.lists(_hard_piece, max_size=12).map("".join)


def _cuts(data: st.DataObject, n: int) -> list[int]:
    return sorted(data.draw(st.lists(st.integers(0, n), max_size=30)))


def _chunks(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def _stream_split(chunks: list[str]) -> list[str]:
    splitter = SentenceSplitter()
    out: list[str] = []
    for c in chunks:
        out += splitter.feed(c)
    return out + splitter.finish()


def _check_sentences(text: str, sentences: list[str]) -> None:
    for s in sentences:
        assert 0 < len(s) <= MAX_SENTENCE_CHARS
        assert s == normalize(s)
    # Nothing lost, nothing invented: only whitespace changes.
    assert re.sub(r"\s", "", "".join(sentences)) == re.sub(r"\s", "", text)


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    return load_tokenizer(tiny_model / "tokenizer.json")


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(text=texts, data=st.data())
def test_splitter_chunked_equals_whole(text: str, data: st.DataObject) -> None:
    whole = split_sentences(text)
    _check_sentences(text, whole)
    assert _stream_split(_chunks(text, _cuts(data, len(text)))) == whole
    assert _stream_split(list(text[:3000])) == split_sentences(text[:3000])  # one character at a time


@SETTINGS
@given(text=texts, data=st.data())
def test_encode_stream_equals_encode_text(text: str, data: st.DataObject, tokenizer) -> None:
    batch = data.draw(st.integers(1, 5))
    chunks = _chunks(text, _cuts(data, len(text)))
    streamed = [i for ids in encode_stream(tokenizer, chunks, batch=batch) for i in ids]
    assert streamed == encode_text(tokenizer, text)
    # Stopped after k chunks, the splitter's tail starts the rest of the text (tokenize_pool does this).
    k, splitter = data.draw(st.integers(0, len(chunks))), SentenceSplitter()
    first = [i for ids in encode_stream(tokenizer, chunks[:k], batch, splitter) for i in ids]
    assert first + [i for ids in encode_stream(tokenizer, [splitter.tail, *chunks[k:]], batch) for i in ids] == streamed


@SETTINGS
@given(text=texts, chunk_bytes=st.integers(1, 40), bom=st.booleans())
def test_file_read_in_small_pieces_equals_whole_text(
    text: str, chunk_bytes: int, bom: bool, tokenizer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("t") / "doc.txt"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    old = reader.CHUNK_BYTES
    reader.CHUNK_BYTES = chunk_bytes  # multi-byte characters get split across reads
    try:
        doc = Document(str(path), path.stat().st_size)
        pieces = list(read_chunks(doc))
        ids = [i for part in token_stream(tokenizer, doc) for i in part]
    finally:
        reader.CHUNK_BYTES = old
    assert "".join(pieces) == text
    assert "\ufffd" not in "".join(pieces)
    assert ids == encode_text(tokenizer, text)


@SETTINGS
@given(ids=st.lists(st.lists(st.integers(0, 99), max_size=20), max_size=20), size=st.integers(1, 9))
def test_segmenter_cuts_any_pushes_like_one_push(ids: list[list[int]], size: int) -> None:
    seg = Segmenter(size)
    segments = [s for part in ids for s in seg.push(part)]
    flat = [i for part in ids for i in part]
    assert all(len(s) == size for s in segments)
    assert [i for s in segments for i in s] + seg.pending == flat
    assert len(seg.pending) < size


def _sync_points(text: str) -> list[int]:
    ends: list[int] = []
    while (end := next_sync(text, ends[-1] if ends else 0)) is not None:
        ends.append(end)
    return ends


@settings(max_examples=200, deadline=None)
@given(
    before=st.sampled_from(["", "a. ", "a.\u00a0", "x" * 500 + " ", "x" * 1500]),
    after_cut=st.text(alphabet=" \n\u00a0", max_size=2),
    run=st.integers(990, 1002),
    closers=st.text(alphabet=_CLOSERS, max_size=4),
    then=st.sampled_from([" z", "\u00a0z. y", "\n", "z"]),
)
def test_cuts_at_sync_points_where_a_forced_cut_may_fall(before: str, after_cut: str, run: int, closers: str, then: str) -> None:
    """A boundary some 1000 characters after the last cut: a forced cut may fall between its punctuation
    and its closers, and a sync point must not be there."""
    _check_cut_at_sync_points(before + after_cut + "y" * run + "." + closers + then)


@SETTINGS
@given(text=hard_texts)
@example(text="x" * 999 + '." b. c')  # the forced cut at 1000 falls between "." and its quote
@example(text="x" * 984 + " " + "y" * 14 + '.") b')  # a space 15 characters before the punctuation
@example(text="x" * 10 + " " + "y" * 997 + '.""" z')  # cut at the space, then 1000 characters later inside .""" 
def test_text_cut_at_every_sync_point_splits_like_the_whole(text: str) -> None:
    _check_cut_at_sync_points(text)


def _check_cut_at_sync_points(text: str) -> None:
    ends = _sync_points(text)
    bounds = [0, *ends, len(text)]
    assert [s for a, b in zip(bounds, bounds[1:]) for s in split_sentences(text[a:b])] == split_sentences(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=hard_texts, data=st.data())
def test_pieces_from_any_chunking_encode_like_the_whole(text: str, data: st.DataObject, tokenizer) -> None:
    """What the workers do, in order in this process: any chunking, piece size and unsynced limit (small
    limits cut pieces anywhere and carry the splitter's tail into the next piece)."""
    min_chars, max_unsynced = data.draw(st.integers(0, 3000)), data.draw(st.integers(0, 5000))
    pieces = list(cut_at_sync_points(_chunks(text, _cuts(data, len(text))), min_chars, max_unsynced))
    assert "".join(p for p, _ in pieces) == text
    assert pieces[-1][1]
    ids: list[int] = []
    tail = ""
    for piece, final in pieces:
        array, rest = encode_piece(tokenizer, tail + piece, final)
        assert array.dtype == "int64"
        ids += array.tolist()
        tail = "" if final else rest
    assert ids == encode_text(tokenizer, text)


def test_encode_sentences_gives_the_ids_of_the_full_encode_batch() -> None:
    """encode_sentences uses the variant without offsets (encode_batch_fast): on real text and on the odd
    characters of the random texts, with the shipped tokenizer, it must give the ids the full call gives."""
    from longqa.checkpoint import default_model_dir
    from longqa.lab.generate.noise import SAMPLE as NOISE_SAMPLE

    tok = load_tokenizer(default_model_dir() / "tokenizer.json")
    sentences = split_sentences(Path(NOISE_SAMPLE).read_text()[:400_000] + " " + _DENSE * 3 + " " + _WORD_CHARS)
    full = [e.ids for e in tok.encode_batch([" " + s for s in sentences], add_special_tokens=False)]
    assert len(sentences) > 1000 and encode_sentences(tok, sentences) == full


def test_a_boundary_far_from_any_space_is_not_a_sync_point() -> None:
    text = "x" * 999 + '." next. '
    # A sentence of 1000 characters without a space is cut at 1000, between the period and its quote.
    assert split_sentences(text) == ["x" * 999 + ".", '" next.']
    assert _sync_points(text) == [len(text) - 1]  # only "next. "
    spaced = "x" * 989 + " " + "x" * 9 + '." next. '
    assert split_sentences(spaced) == ["x" * 989, "x" * 9 + '."', "next."]
    assert _sync_points(spaced) == [1001, len(spaced) - 1]


def test_a_sync_point_at_a_chunk_end_is_found_once_it_is_whole() -> None:
    chunks = ["Hello there.", '"', ") Next one. An", "d more."]
    pieces = list(cut_at_sync_points(chunks, 1, 10**6))
    assert pieces == [('Hello there.")', True), (" Next one.", True), (" And more.", True)]


# ---- hand cases -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, sentences",
    [
        ("Mary went to the kitchen. John went to the garden.", ["Mary went to the kitchen.", "John went to the garden."]),
        ("Hi!  Really?\nYes.", ["Hi!", "Really?", "Yes."]),
        ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
        ("She said \u201chi.\u201d Then", ["She said \u201chi.\u201d", "Then"]),
        ("(Wow.) Next one.", ["(Wow.)", "Next one."]),
        ("Wait... what?", ["Wait...", "what?"]),
        ("Pi is 3.14 or so. Yes.", ["Pi is 3.14 or so.", "Yes."]),
        ("see e.g.the end", ["see e.g.the end"]),
        ("a  b\n\n\tc.   ", ["a b c."]),
        ("no end at all", ["no end at all"]),
        ("", []),
        (" \n\t ", []),
        ("Done.", ["Done."]),
        ("日本語です。 Über. Ça va?", ["日本語です。 Über.", "Ça va?"]),
    ],
)
def test_split_sentences_hand_cases(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def test_long_run_without_spaces_is_cut_at_max_length() -> None:
    text = "x" * (2 * MAX_SENTENCE_CHARS + 500)
    assert [len(s) for s in split_sentences(text)] == [MAX_SENTENCE_CHARS, MAX_SENTENCE_CHARS, 500]


def test_long_sentence_is_cut_at_whitespace_not_inside_words() -> None:
    words = [f"w{i:07d}" for i in range(600)]  # 8 chars + space each: 5400 chars, no sentence end
    sentences = split_sentences(" ".join(words))
    assert len(sentences) > 5
    assert all(len(s) <= MAX_SENTENCE_CHARS for s in sentences)
    assert [w for s in sentences for w in s.split(" ")] == words


def test_sentence_end_exactly_at_a_chunk_boundary() -> None:
    s = SentenceSplitter()
    assert s.feed("Hello there.") == []  # the next character decides: "Hello there.com" is not an end
    assert s.feed(" World") == ["Hello there."]
    assert s.feed(".") == []
    assert s.finish() == ["World."]
    s = SentenceSplitter()
    assert s.feed('Stop."') + s.feed("' Go.") + s.finish() == ['Stop."\'', "Go."]


def test_sentence_at_exactly_max_length_ending_in_a_period() -> None:
    first = "a" * (MAX_SENTENCE_CHARS - 1) + "."
    text = first + " b."
    assert split_sentences(text) == [first, "b."]
    assert _stream_split(list(text)) == [first, "b."]


def test_question_ids_end_with_gen_and_match_sentence_encoding(tokenizer) -> None:
    ids = question_ids(tokenizer, "  Where is   Mary? ")
    assert ids[-1] == tokenizer.token_to_id(GEN)
    assert ids[:-1] == encode_text(tokenizer, "Where is Mary?")
