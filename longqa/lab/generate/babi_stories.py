"""bAbI v1.2's own training stories for QA1–QA5, in the generator's types. For training only: never evaluate on them.

The files (data/babi-v1.2, credited in its SOURCE.md) are parsed once per process and kept (`load`); load them
before forking DataLoader workers and the workers share them. Each fact is parsed back into an action and replayed
in babi.World, so a real story has the same question lists as a generated one. bAbI's own answers all agree with
the World's but for 20 QA5 questions, which bAbI answered about an earlier give than the latest one that matches
them (tests/test_babi_stories.py shows which); `sample` never asks those, and dense streams answer them as the
World does.
"""

from __future__ import annotations

import functools
import lzma
import random
import re
from dataclasses import dataclass
from pathlib import Path

from longqa.lab.generate.babi import (
    DROP_VERBS,
    GET_VERBS,
    GIVE_VERBS,
    MOVE_VERBS,
    QA,
    Action,
    Fact,
    Item,
    Sample,
    World,
    put_first,
    qa4_questions,
    qa5_questions,
    questions,
)
from longqa.questions import OBJECTS, PEOPLE, PEOPLE_QA5, ROOMS

DATA = Path(__file__).parent / "data" / "babi-v1.2"
FILES = {
    "qa1": "qa1_single-supporting-fact_train_en-10k.txt.xz",
    "qa2": "qa2_two-supporting-facts_train_en-10k.txt.xz",
    "qa3": "qa3_three-supporting-facts_train_en.txt.xz",
    "qa4": "qa4_two-arg-relations_train_en-10k.txt.xz",
    "qa5": "qa5_three-arg-relations_train_en-10k.txt.xz",
}

_P = "|".join(dict.fromkeys(PEOPLE + PEOPLE_QA5))
_R = "|".join(ROOMS)
_O = "|".join(OBJECTS)
# bAbI's sentences, one per action kind; a get or a drop may end in "there".
_SENTENCES = (
    ("move", re.compile(rf"({_P}) (?:{'|'.join(MOVE_VERBS)}) the ({_R})\.")),
    ("get", re.compile(rf"({_P}) (?:{'|'.join(GET_VERBS)}) the ({_O})(?: there)?\.")),
    ("drop", re.compile(rf"({_P}) (?:{'|'.join(DROP_VERBS)}) the ({_O})(?: there)?\.")),
    ("give", re.compile(rf"({_P}) (?:{'|'.join(GIVE_VERBS)}) the ({_O}) to ({_P})\.")),
)


def parse_fact(sentence: str) -> Action:
    """The action a bAbI fact sentence states (babi.Action)."""
    for kind, rx in _SENTENCES:
        if m := rx.fullmatch(sentence):
            return (kind, *m.groups())
    raise ValueError(f"not a bAbI fact: {sentence!r}")


def qa5_case(sample: Sample) -> dict[str, int]:
    """A QA5 question's form (its index in babi.QA5_FORMS), and how many facts and how many gives the story
    tells after the give it asks about (the latest give the question matches)."""
    gives = [(i, act[1:]) for i, act in enumerate(map(parse_fact, sample.facts)) if act[0] == "give"]
    about = max(k for k, (_, g) in enumerate(gives) if sample.question in dict(qa5_questions(g)))
    at, give = gives[about]
    form = [q for q, _ in qa5_questions(give)].index(sample.question)
    return {"form": form, "facts_after": len(sample.facts) - 1 - at, "gives_after": len(gives) - 1 - about}


@dataclass(frozen=True)
class Story:
    facts: tuple[str, ...]
    actions: tuple[Action, ...]  # the facts parsed; empty for QA4, whose facts are relations
    asked: tuple[tuple[int, QA], ...]  # bAbI's questions in story order, each after that many facts


@dataclass(frozen=True)
class Bank:
    """A task's stories, and every question `sample` may ask: (story, question) indices."""

    task: str
    stories: tuple[Story, ...]
    askable: tuple[tuple[int, int], ...]


def read(task: str) -> tuple[Story, ...]:
    """The task's stories as bAbI's file has them."""
    stories: list[Story] = []
    facts: list[str] = []
    asked: list[tuple[int, QA]] = []

    def close() -> None:
        if facts:
            actions = () if task == "qa4" else tuple(map(parse_fact, facts))
            stories.append(Story(tuple(facts), actions, tuple(asked)))

    with lzma.open(DATA / FILES[task], "rt", encoding="utf-8") as f:
        for line in f:
            number, text = line.rstrip("\n").split(" ", 1)
            if number == "1":  # a new story
                close()
                facts, asked = [], []
            if "\t" in text:
                question, answer, _support = text.split("\t")
                asked.append((len(facts), (question.strip(), answer)))
            else:
                facts.append(text)
    close()
    return tuple(stories)


def _people(task: str) -> tuple[str, ...]:
    return PEOPLE_QA5 if task == "qa5" else PEOPLE


def world_questions(task: str, story: Story) -> list[list[QA]]:
    """At each of bAbI's questions in the story, every question the World answers there (qa4: the facts answer)."""
    if task == "qa4":
        return [qa4_questions(list(story.facts[:n])) for n, _ in story.asked]
    w = World(_people(task))
    out = []
    done = 0
    for n, _ in story.asked:
        for act in story.actions[done:n]:
            w.apply(act)
        done = n
        out.append(questions(task, w))
    return out


@functools.cache
def load(task: str) -> Bank:
    """The task's stories, parsed and checked once per process."""
    stories = read(task)
    askable = tuple(
        (i, j)
        for i, story in enumerate(stories)
        for j, ((_, qa), valid) in enumerate(zip(story.asked, world_questions(task, story)))
        if qa in valid
    )
    return Bank(task, stories, askable)


def sample(task: str, rng: random.Random, mid_story: bool = False) -> Sample:
    """A random question of bAbI's file with the story's facts before it, as BABILong makes a sample: others are the
    other questions the story answers there; mid_story also fills asked_after, as babi.generate does."""
    bank = load(task)
    i, j = rng.choice(bank.askable)
    story = bank.stories[i]
    n, asked = story.asked[j]
    facts = list(story.facts[:n])
    if task == "qa4":
        return Sample(task, facts, *asked, others=put_first(qa4_questions(facts), asked)[1:])
    w = World(_people(task))
    after = []
    for act in story.actions[:n]:
        w.apply(act)
        if mid_story:
            after.append(questions(task, w))
    return Sample(task, facts, *asked, others=put_first(questions(task, w), asked)[1:], asked_after=after)


def dense_stream(task: str, rng: random.Random, n_facts: int) -> list[Item]:
    """n_facts facts of real stories with the questions valid at that point (see Item), as babi.dense_stream: where
    bAbI asks, its question first, and after every 1–3 facts without one, a random one first.

    QA1-QA3 and QA5 take consecutive stories from a random one on. Each story starts a new World, so its questions
    are about what it says itself; every answer is the latest fact about its subject, so reading the stories
    as one gives the same answers. QA4 takes independent random stories, each followed by 1–2 questions."""
    bank = load(task)
    items: list[Item] = []
    if task == "qa4":
        while n_facts > 0:
            story = rng.choice(bank.stories)
            facts = list(story.facts[:n_facts])
            n_facts -= len(facts)
            items += map(Fact, facts)
            qs = qa4_questions(facts)
            firsts = [story.asked[0][1]] if story.asked[0][1] in qs else []
            firsts += [rng.choice(qs) for _ in range(rng.randint(1, 2) - len(firsts))]
            items += [put_first(qs, first) for first in firsts]
        return items
    i = rng.randrange(len(bank.stories))
    gap = rng.randint(1, 3)
    while n_facts > 0:
        story = bank.stories[i]
        i = (i + 1) % len(bank.stories)
        w = World(_people(task))
        babi_asks = dict(story.asked)
        for n, (fact, act) in enumerate(zip(story.facts[:n_facts], story.actions), 1):
            w.apply(act)
            items.append(Fact(fact))
            gap -= 1
            if n in babi_asks or gap <= 0:
                qs = questions(task, w)
                first = babi_asks.get(n)
                if first not in qs:  # no bAbI question here, or one the World answers otherwise
                    first = rng.choice(qs) if qs else None
                if first is not None:
                    items.append(put_first(qs, first))
                    gap = rng.randint(1, 3)
        n_facts -= min(n_facts, len(story.facts))
    return items
