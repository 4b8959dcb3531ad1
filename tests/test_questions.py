"""Questions as people type them (issue #32): one normalising function, which the evaluator can call too."""

from __future__ import annotations

import random

import pytest

from longqa.lab.generate import babi
from longqa.questions import ENTITIES, FORMS_HELP, MentionScanner, normalize_question, parse_question, question_task

# typed -> (what the model reads, task, names it needs the text to mention)
SUPPORTED = [
    ("Where is Mary?", "Where is Mary?", "qa1", ("Mary",)),
    ("where is mary?", "Where is Mary?", "qa1", ("Mary",)),
    ("Where is mary?", "Where is Mary?", "qa1", ("Mary",)),
    ("Where is Mary", "Where is Mary?", "qa1", ("Mary",)),
    ("Where is Mary ?", "Where is Mary?", "qa1", ("Mary",)),
    ("  WHERE   is\tMARY ??  ", "Where is Mary?", "qa1", ("Mary",)),
    ("Where's Mary?", "Where is Mary?", "qa1", ("Mary",)),
    ("where\u2019s fred", "Where is Fred?", "qa1", ("Fred",)),
    ("Where is the milk?", "Where is the milk?", "qa2", ("milk",)),
    ("where is milk", "Where is the milk?", "qa2", ("milk",)),
    ("Where is the Football?", "Where is the football?", "qa2", ("football",)),
    ("where was the apple before the Kitchen", "Where was the apple before the kitchen?", "qa3", ("apple", "kitchen")),
    ("what is north of the office", "What is north of the office?", "qa4", ("office",)),
    ("What is the garden WEST of ?", "What is the garden west of?", "qa4", ("garden",)),
    ("what did jeff give to bill", "What did Jeff give to Bill?", "qa5", ("Jeff", "Bill")),
    ("Who gave the football to fred", "Who gave the football to Fred?", "qa5", ("football", "Fred")),
    ("who did Mary give milk to?", "Who did Mary give the milk to?", "qa5", ("Mary", "milk")),
    ("who gave the apple", "Who gave the apple?", "qa5", ("apple",)),
    ("WHO RECEIVED THE MILK", "Who received the milk?", "qa5", ("milk",)),
]

UNSUPPORTED = [
    ("What is the meaning of life?", "not a question form"),
    ("Where is Bob?", "no person or object called 'Bob'"),
    ("Where is Elizabeth?", "no person or object called 'Elizabeth'"),
    ("Where is the kitchen?", "rooms do not move"),
    ("Who gave the ball to Fred?", "no object called 'ball'"),
    ("What is north of the attic?", "no room called 'attic'"),
    ("What did Mary give to Zeus?", "no person called 'Zeus'"),
    ("Where is Mary 3?", "not a question form"),
    ("notes.txt", "not a question form"),
    ("What is up of the kitchen?", "not a question form"),
    ("Where is " + "x" * 100_000 + "?", "no person or object"),
]


@pytest.mark.parametrize("typed, text, task, names", SUPPORTED, ids=[s[0] for s in SUPPORTED])
def test_questions_as_typed_become_the_trained_form(typed: str, text: str, task: str, names: tuple[str, ...]) -> None:
    q = parse_question(typed)
    assert (q.text, q.task, q.names, q.supported, q.asked) == (text, task, names, True, typed)
    assert normalize_question(typed) == text
    assert question_task(text) == task  # the form the generator writes and the model was trained on


@pytest.mark.parametrize("typed, why", UNSUPPORTED, ids=[s[0][:30] for s in UNSUPPORTED])
def test_questions_the_model_cannot_answer_say_why(typed: str, why: str) -> None:
    q = parse_question(typed)
    assert not q.supported and q.task is None and why in q.problem
    assert len(q.problem) < 300  # a 100K-character question is quoted short
    assert normalize_question(typed).endswith("?") and "  " not in normalize_question(typed)


@pytest.mark.parametrize("task", ["qa1", "qa2", "qa3", "qa4", "qa5"])
def test_normalising_leaves_every_generated_question_as_it_is(task: str) -> None:
    """The evaluator may call normalize_question on what the generator asks: it must change nothing."""
    rng = random.Random(7)
    wordings = [babi.BABI, babi.Wording(qa4_inverse=0.0, qa4_relative=False)]
    questions = []
    for w in wordings:
        for _ in range(100):
            s = babi.generate(task, rng, w)
            questions += [s.question] + [q for q, _ in s.others]
    try:  # bAbI's own stories, where the lab ships them
        from longqa.lab.generate import babi_stories
    except ImportError:
        babi_stories = None
    if babi_stories is not None:
        for _ in range(100):
            s = babi_stories.sample(task, rng)
            questions += [s.question] + [q for q, _ in s.others]
    assert questions and all(normalize_question(q) == q for q in questions)
    assert all(parse_question(q).supported and parse_question(q).task == task for q in questions)


def test_forms_help_lists_only_supported_questions() -> None:
    for q in FORMS_HELP.split(" | "):
        assert parse_question(q).supported and parse_question(q).text == q


def test_mention_scanner_finds_names_in_any_case_across_chunk_boundaries() -> None:
    s = MentionScanner()
    for chunk in ["Then MA", "RY went to the kit", "chen. The Milk is here. Maryland is not Mary's"]:
        s.feed(chunk)
    assert s.found == {"Mary", "kitchen", "milk"}
    s = MentionScanner()
    s.feed("Summary: millions of offices, applesauce.")  # words that merely contain a name
    assert s.found == set()


def test_mention_scanner_stops_once_everything_is_found() -> None:
    s = MentionScanner()
    s.feed(" ".join(ENTITIES) + ".")
    assert s.found == set(ENTITIES) and s._left == []
    s.feed("anything")  # no work left
