"""The evaluator's QA5 breakdown: the issue's target asks for every question form, and for stories that go on
after the give a question asks about."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from longqa import cli
from longqa.lab.eval import Cell, qa5_breakdown
from longqa.lab.generate import babi
from longqa.lab.generate.babi_stories import qa5_case

SHIPPED = Path(__file__).parent.parent / "weights" / "longqa-armt-small"
FACTS = ["Mary went to the kitchen.", "Mary got the milk.", "Mary gave the milk to Fred.",
         "Fred handed the milk to Jeff.", "Jeff went to the garden."]


def case(question: str, answer: str) -> dict[str, int]:
    return qa5_case(babi.Sample("qa5", FACTS, question, answer))


def test_qa5_case_finds_the_latest_give_the_question_matches() -> None:
    # Mary's give is the only one from Mary to Fred, though Fred passed the milk on after it.
    assert case("Who gave the milk to Fred?", "Mary") == {"form": 1, "facts_after": 2, "gives_after": 1}
    # "Who received the milk?" matches both gives: the latest one answers.
    assert case("Who received the milk?", "Jeff") == {"form": 4, "facts_after": 1, "gives_after": 0}
    assert case("What did Fred give to Jeff?", "milk") == {"form": 0, "facts_after": 1, "gives_after": 0}


def test_generated_qa5_documents_ask_every_form_and_often_go_on_after_the_give() -> None:
    rng = random.Random(0)
    cases = [qa5_case(babi.generate("qa5", rng)) for _ in range(500)]
    assert {c["form"] for c in cases} == set(range(len(babi.QA5_FORMS)))
    assert 0.3 < sum(c["facts_after"] > 0 for c in cases) / len(cases) < 0.9
    assert any(c["gives_after"] > 0 for c in cases)


def test_qa5_breakdown_scores_each_form_and_the_stories_that_go_on() -> None:
    docs = [{"correct": True, "form": 0, "facts_after": 0, "gives_after": 0},
            {"correct": False, "form": 0, "facts_after": 2, "gives_after": 1},
            {"correct": True, "form": 3, "facts_after": 1, "gives_after": 0}]
    line = qa5_breakdown(Cell("qa5", 16_000, 3, 2 / 3, 0, 0, 16_000, 1.0, docs))
    assert line.startswith("qa5 16K by form: 'What did {p} give to {q}?' 50.0 (n=2);")
    assert "'Who gave the {o}?' 100.0 (n=1)" in line and "'Who received the {o}?' – (n=0)" in line
    assert line.endswith("Facts after the asked-about give: 50.0 (n=2); gives after it: 0.0 (n=1)")


def test_eval_prints_and_saves_the_qa5_breakdown(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "e.json"  # the shipped model: QA5's questions are longer than the tiny test model takes
    argv = ["eval", "--tasks", "qa5", "--lengths", "300", "-n", "8", "--batch", "4", "--json", str(out), "-m", str(SHIPPED)]
    assert cli.main(argv) == 0
    assert "qa5 300 by form: 'What did {p} give to {q}?'" in capsys.readouterr().err
    docs = json.loads(out.read_text())["cells"][0]["documents"]
    assert len(docs) == 8 and all({"form", "facts_after", "gives_after"} <= d.keys() for d in docs)
