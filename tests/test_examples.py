"""Training examples and batches (longqa/lab/generate/examples.py)."""

from __future__ import annotations

import random
import re
from dataclasses import replace
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from longqa.input.text import GEN
from longqa.lab.generate import babi
from longqa.lab.generate.examples import IGNORE, QUESTION_WIDTH_STEP, ExampleMaker, Questions, collate
from longqa.lab.generate.haystack import NoiseBank
from longqa.lab.train import Stage

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "weights" / "longqa-armt-small" / "tokenizer.json"
NOISE = ROOT / "longqa" / "lab" / "generate" / "data" / "noise-sample.txt"


@pytest.fixture(scope="module")
def maker() -> ExampleMaker:
    tok = Tokenizer.from_file(str(TOKENIZER))
    return ExampleMaker(tok, NoiseBank([str(NOISE)], tok), 64, 0.25)


def test_task_weights_select_the_tasks_drawn(maker: ExampleMaker) -> None:
    rng = random.Random(0)
    stage = Stage(1, 2, 0.5, task_weights=[0, 0, 1, 0, 0])
    assert {maker.example(rng, stage, 2).task for _ in range(20)} == {"qa3"}
    assert {maker.example(rng, stage, 2, [1, 0, 0, 0, 0]).task for _ in range(20)} == {"qa1"}  # the run's mix wins
    uniform = replace(stage, task_weights=None)
    assert {maker.example(rng, uniform, 1).task for _ in range(200)} == set(babi.TASKS)


def test_stage_wording_reaches_every_example(maker: ExampleMaker) -> None:
    tok, rng = maker.tok, random.Random(0)
    easy = Stage(1, 2, 0.5, task_weights=[0, 0, 0, 1, 0], final_questions=8, qa4_inverse=0.0, qa4_relative=False)

    def text(stage: Stage) -> str:
        return " ".join(tok.decode(i) for _ in range(30) for e in [maker.example(rng, stage, 2)] for i in [e.ids, *(q for q, _ in e.finals)])

    easy_text = text(easy)
    assert re.search(r"The \w+ is (north|east) of", easy_text) and not re.search(r"The \w+ is (south|west) of", easy_text)
    assert re.search(r"What is (north|east) of the", easy_text) and not re.search(r"What is the \w+ \w+ of", easy_text)
    babi_text = text(replace(easy, qa4_inverse=0.5, qa4_relative=True))
    assert re.search(r"The \w+ is (south|west) of", babi_text) and re.search(r"What is the \w+ (north|south|east|west) of", babi_text)


def test_inline_questions_leave_out_the_streams_questions_but_not_the_final_ones(maker: ExampleMaker) -> None:
    maker = ExampleMaker(maker.tok, maker.bank, 128, 0.25)
    gen = maker.tok.token_to_id(GEN)
    stage = Stage(1, 2, 1.0, task_weights=[0, 1, 0, 0, 0])
    asked = {}
    for inline in (1.0, 0.5, 0.0):
        rng = random.Random(2)
        rows = [maker.example(rng, replace(stage, inline_questions=inline), 2) for _ in range(60)]
        asked[inline] = sum(e.ids.count(gen) for e in rows) / len(rows)
        assert all(e.finals for e in rows)
    assert asked[1.0] > 2 and 0.3 < asked[0.5] / asked[1.0] < 0.7 and asked[0.0] == 0, asked


def test_a_dense_rows_labels_are_its_inline_answers_and_a_single_row_has_none(maker: ExampleMaker) -> None:
    rng = random.Random(5)
    for dense, inline in ((1.0, True), (0.0, False)):
        e = maker.example(rng, Stage(1, 2, dense, task_weights=[1, 0, 0, 0, 0]), 2)
        assert len(e.labels) == len(e.ids) and any(la != IGNORE for la in e.labels) == inline
        for q, la in e.finals:  # question GEN answer EOS: the answer and EOS are predicted from GEN on
            g = q.index(maker.gen)
            assert la[: g] == [IGNORE] * g and la[g : -1] == q[g + 1 :] and la[-1] == IGNORE


def test_segment_questions_are_answered_by_the_story_up_to_their_segment(maker: ExampleMaker) -> None:
    """Stage.segment_questions: each (segment, question) of a BABILong row has the answer that the facts in the
    context up to that segment's end give, by an independent replay of the decoded text."""
    from test_babi import Replay

    tok = maker.tok
    fact = re.compile(rf"(?:{'|'.join(babi.PEOPLE)}) [a-z ]+ the \w+(?: there)?\.")
    rng = random.Random(3)
    asked = 0
    for task in ("qa1", "qa2", "qa3"):
        stage = Stage(1, 6, 0.0, task_weights=[float(t == task) for t in babi.TASKS], segment_questions=1.0)
        for _ in range(10):
            e = maker.example(rng, stage, 6)
            assert all(s < len(e.ids) // 64 for s, _, _ in e.mids)
            for s, q_ids, q_labels in e.mids:
                r = Replay(task)
                for f in fact.findall(tok.decode(e.ids[: (s + 1) * 64])):
                    r.fact(f)
                question = tok.decode(q_ids[: q_ids.index(maker.gen)]).strip()
                answer = tok.decode([la for la in q_labels if la != IGNORE][:-1]).strip()  # without EOS
                assert r.answer(task, question) == answer, (s, question, answer)
                asked += 1
        assert not maker.example(rng, replace(stage, segment_questions=0.0), 6).mids
    assert asked > 30


def test_collate_pads_contexts_to_whole_segments_and_names_each_questions_row(maker: ExampleMaker) -> None:
    rng = random.Random(4)
    stage = Stage(1, 3, 0.0, task_weights=[1, 1, 1, 0, 0], final_questions=2, segment_questions=1.0)
    examples = [maker.example(rng, stage, n) for n in (1, 3, 2)]
    b = collate(examples, 64, 0)
    assert b.ids.shape == (3, 3 * 64) and b.lengths.tolist() == [len(e.ids) for e in examples]
    assert b.finals.row.tolist() == [i for i, e in enumerate(examples) for _ in e.finals]
    assert b.mids.seg.tolist() == [s for e in examples for s, _, _ in e.mids] and (b.finals.seg == -1).all()
    assert b.task.tolist() == [babi.TASKS.index(e.task) for e in examples for _ in e.finals]
    for i, e in enumerate(examples):
        assert b.ids[i, : len(e.ids)].tolist() == e.ids and (b.ids[i, len(e.ids) :] == 0).all()


def test_question_segments_are_padded_to_a_few_widths_each_row_keeping_its_length() -> None:
    # Compiled training compiles a question graph per width: batches whose longest questions differ by a token
    # or two must share one.
    def rows(longest: int) -> list[tuple[int, int, list[int], list[int]]]:
        return [(0, -1, [5] * 4, [IGNORE] * 3 + [7]), (1, -1, [6] * longest, [IGNORE] * (longest - 1) + [8])]

    widths = {n: Questions.of(rows(n), 0).ids.shape[1] for n in range(1, 3 * QUESTION_WIDTH_STEP + 1)}
    assert all(n <= w < n + QUESTION_WIDTH_STEP and w % QUESTION_WIDTH_STEP == 0 for n, w in widths.items())
    assert len(set(widths.values())) == 3
    q = Questions.of(rows(9), 0)
    assert q.lengths.tolist() == [4, 9]
    assert q.ids[1, :9].tolist() == [6] * 9 and (q.ids[1, 9:] == 0).all() and (q.labels[1, 9:] == IGNORE).all()


@pytest.mark.parametrize("dense", [1.0, 0.0])
def test_real_bAbI_stories_make_examples_of_every_task(maker: ExampleMaker, dense: float) -> None:
    """Stage.real_stories: the stories come from the bAbI v1.2 training files (their wording: "John got the
    apple.", which the generator writes only for QA3), and every example still has a final question."""
    rng = random.Random(6)
    stage = Stage(1, 3, dense, real_stories=1.0, segment_questions=1.0, final_questions=2)
    examples = [maker.example(rng, stage, 3) for _ in range(40)]
    assert {e.task for e in examples} == set(babi.TASKS) and all(e.finals for e in examples)
    text = " ".join(maker.tok.decode(e.ids) for e in examples if e.task in ("qa2", "qa5"))
    assert re.search(r"(John|Mary|Sandra|Daniel|Bill|Fred|Jeff) (got|grabbed|picked up|took) the \w+ there\.", text)
