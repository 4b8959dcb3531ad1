"""The library API (longqa.engine.Engine): read documents into memories, answer from them."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from conftest import babi_text

from longqa.checkpoint import fingerprint, load_model_dir
from longqa.engine import Engine
from longqa.errors import InputError
from longqa.input.reader import Document
from longqa.input.text import encode_text

QUESTIONS = ["Where is Mary?", "Where is John?", "Where is Sandra?"]


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Engine:
    return Engine(tiny_model, "cpu")


def doc(tmp_path: Path, name: str, text: str) -> Document:
    path = tmp_path / name
    path.write_text(text)
    return Document(str(path), path.stat().st_size)


def test_an_engine_reads_a_document_and_answers_every_question(engine: Engine, tiny_model: Path, tmp_path: Path) -> None:
    d = doc(tmp_path, "a.txt", babi_text(60))
    memory = engine.new_memory()
    seen: list[int] = []
    engine.read([memory], [[d]], on_tokens=seen.append)
    n = len(encode_text(engine.tokenizer, babi_text(60)))
    assert memory.tokens == n and memory.sources == [d.name]
    S = engine.config.segment_len
    assert len(memory.pending) == n % S and sum(seen) == n - n % S  # whole segments read, the tail kept
    answers = engine.answer([memory], QUESTIONS)
    assert len(answers) == 1 and len(answers[0]) == len(QUESTIONS) and all(isinstance(a, str) for a in answers[0])
    assert engine.fingerprint == fingerprint(tiny_model) and engine.device == torch.device("cpu")


def test_reading_in_two_calls_equals_reading_at_once(engine: Engine, tmp_path: Path) -> None:
    a, b = doc(tmp_path, "a.txt", babi_text(45, seed=1)), doc(tmp_path, "b.txt", babi_text(70, seed=2))
    once, twice = engine.new_memory(), engine.new_memory()
    engine.read([once], [[a, b]])
    engine.read([twice], [[a]])
    engine.read([twice], [[b]])
    assert (once.tokens, once.pending, once.sources) == (twice.tokens, twice.pending, twice.sources)
    assert torch.equal(once.state.A, twice.state.A) and torch.equal(once.state.z, twice.state.z)
    assert engine.answer([once], QUESTIONS) == engine.answer([twice], QUESTIONS)


def test_a_document_read_in_a_batch_equals_the_document_alone(engine: Engine, tmp_path: Path) -> None:
    docs = [doc(tmp_path, f"d{i}.txt", babi_text(n, seed=i)) for i, n in enumerate((80, 5, 30))]
    batched = [engine.new_memory() for _ in docs]
    engine.read(batched, [[d] for d in docs])
    answers = engine.answer(batched, QUESTIONS)
    for d, memory, said in zip(docs, batched, answers):
        alone = engine.new_memory()
        engine.read([alone], [[d]])
        torch.testing.assert_close(memory.state.A, alone.state.A, rtol=1e-5, atol=1e-6)
        assert engine.answer([alone], QUESTIONS)[0] == said
    pairs = [(batched[2], QUESTIONS[1]), (batched[0], QUESTIONS[0])]
    assert engine.answer_pairs(pairs) == [answers[2][1], answers[0][0]]


def test_an_engine_around_a_model_in_memory_answers_as_one_from_its_directory(engine: Engine, tiny_model: Path) -> None:
    model, tok = load_model_dir(tiny_model)
    other = Engine.from_model(model, tok, "cpu")
    ids = encode_text(tok, babi_text(40, seed=3))
    memories = [engine.new_memory(), other.new_memory()]
    for e, m in zip((engine, other), memories):
        e.read_ids([m], [[ids]])
    assert engine.answer(memories[:1], QUESTIONS) == other.answer(memories[1:], QUESTIONS)
    assert other.fingerprint == ""  # its memories carry no model identity


def test_a_question_longer_than_a_segment_is_refused(engine: Engine) -> None:
    with pytest.raises(InputError, match="question too long"):
        engine.answer([engine.new_memory()], ["Where is " + "Mary and " * 400 + "John?"])
