"""Seeded bAbI v1.2 story simulators for QA1–QA5 (wording per /work/shared/babilong.md).

Every story comes from simulating a small world with legal actions only, so each answer is determined
by the facts. All randomness comes from the `random.Random` passed in, never the global RNG.
"""

from __future__ import annotations

import copy
import random
import re
from dataclasses import dataclass, field, replace

from longqa.questions import OBJECTS, PEOPLE, PEOPLE_QA5, ROOMS

MOVE_VERBS = ("moved to", "went to", "went back to", "journeyed to", "travelled to")
GET_VERBS = ("got", "grabbed", "picked up", "took")
DROP_VERBS = ("dropped", "discarded", "left", "put down")
GIVE_VERBS = ("gave", "handed", "passed")
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}

TASKS = ("qa1", "qa2", "qa3", "qa4", "qa5")
LABELS: dict[str, tuple[str, ...]] = {
    **{t: ROOMS for t in ("qa1", "qa2", "qa3", "qa4")},
    "qa5": ("Bill", "Fred", "Jeff", "Mary", "apple", "football", "milk"),
}

# Story lengths (facts). QA1/QA2 follow bAbI; QA3 is "as QA2, longer". QA5 simulates about QA5_FACTS
# facts, cuts the story after its last give, then adds QA5_AFTER unrelated (give-free) facts.
QA1_FACTS = (2, 10)
QA2_FACTS = (2, 70)
QA3_FACTS = (10, 100)
QA5_FACTS = (2, 40)
QA5_AFTER = (0, 5)

# Relative odds of each action kind among those legal at a step.
_WEIGHTS: dict[str, dict[str, float]] = {
    "qa1": {"move": 1.0},
    "qa2": {"move": 3.0, "get": 1.0, "drop": 1.0},
    "qa3": {"move": 3.0, "get": 1.0, "drop": 1.0},
    "qa5": {"move": 4.0, "get": 2.0, "drop": 1.0, "give": 3.0},
}

Action = tuple[str, ...]  # ("move", p, room) | ("get", p, obj) | ("drop", p, obj) | ("give", p, obj, q)
QA = tuple[str, str]  # (question, answer)


@dataclass(frozen=True)
class Fact:
    """A fact sentence, and where its subject was just before the action (None before their first move).
    For a drop, that is where the object now lies; for a move, the room left. Finding it is the
    latest-before lookup that QA2 and QA3 rest on; training can ask for it at the fact (Stage.where_targets)."""

    text: str
    where: str | None = None


# A fact, or every (question, answer) pair valid at that point: the one to ask first, then the rest.
Item = Fact | list[QA]


@dataclass
class Sample:
    task: str
    facts: list[str]
    question: str
    answer: str
    others: list[QA] = field(default_factory=list)  # the story's other questions (training asks several)
    where: list[str | None] = field(default_factory=list)  # per fact, its Fact.where (all None for QA4)
    # QA1-QA3 from generate(..., mid_story=True): per fact, every question the story answers right after it
    asked_after: list[list[QA]] = field(default_factory=list)


class World:
    """People's rooms, who holds what, where each object is and has been, and the last give."""

    def __init__(self, people: tuple[str, ...]) -> None:
        self.people = people
        self.loc: dict[str, str] = {}  # person -> room; absent until their first move
        self.holder: dict[str, str] = {}  # object -> person holding it
        self.obj_loc: dict[str, str] = {}  # object -> room; absent until the object is first got
        self.history: dict[str, list[str]] = {}  # object -> rooms in order, no immediate repeats
        self.last_give: tuple[str, str, str] | None = None  # (giver, object, receiver)
        self.gives = 0

    def legal(self) -> dict[str, list[Action]]:
        acts: dict[str, list[Action]] = {"move": [], "get": [], "drop": [], "give": []}
        for p in self.people:
            # Moving to the room one is already in would add nothing (and no history step).
            acts["move"] += [("move", p, r) for r in ROOMS if r != self.loc.get(p)]
        for o in OBJECTS:
            p = self.holder.get(o)
            if p is None:
                # An object never seen yet may be in any room; a dropped one only where it was left.
                acts["get"] += [
                    ("get", q, o) for q in self.people if q in self.loc and self.obj_loc.get(o, self.loc[q]) == self.loc[q]
                ]
            else:
                acts["drop"].append(("drop", p, o))
                acts["give"] += [("give", p, o, q) for q in self.people if q != p and self.loc.get(q) == self.loc[p]]
        return acts

    def _place(self, obj: str, room: str) -> None:
        self.obj_loc[obj] = room
        hist = self.history.setdefault(obj, [])
        if not hist or hist[-1] != room:
            hist.append(room)

    def apply(self, act: Action) -> None:
        kind, p, x = act[0], act[1], act[2]
        if kind == "move":
            self.loc[p] = x
            for o, h in self.holder.items():
                if h == p:
                    self._place(o, x)
        elif kind == "get":
            self.holder[x] = p
            self._place(x, self.loc[p])
        elif kind == "drop":
            del self.holder[x]
        else:
            self.holder[x] = act[3]
            self.last_give = (p, x, act[3])
            self.gives += 1

    def hint(self, act: Action) -> str:
        """What a sentence about `act`, not yet applied, can state that bAbI leaves to the reader (Wording.hints):
        the room of a drop; where a mover carrying something comes from, and what they carry."""
        kind, p = act[0], act[1]
        if kind == "drop":
            return f" in the {self.loc[p]}"
        carried = [f"the {o}" for o, h in sorted(self.holder.items()) if h == p]
        if kind == "move" and carried:
            return f" from the {self.loc[p]} with {' and '.join(carried)}"
        return ""

    def step(self, rng: random.Random, weights: dict[str, float], hints: float = 0.0) -> Fact:
        """Take one random legal action of the allowed kinds; return its fact, hinted with chance `hints`."""
        acts = self.legal()
        kinds = [k for k in weights if acts[k]]
        kind = rng.choices(kinds, [weights[k] for k in kinds])[0]
        act = rng.choice(acts[kind])
        hint = self.hint(act) if hints and rng.random() < hints else ""  # no draw at bAbI's wording
        where = self.loc.get(act[1])
        self.apply(act)
        return Fact(sentence(act, rng, hint), where)


def sentence(act: Action, rng: random.Random, hint: str = "") -> str:
    kind, p, x = act[0], act[1], act[2]
    if kind == "move":
        return f"{p} {rng.choice(MOVE_VERBS)} the {x}{hint}."
    if kind == "get":
        return f"{p} {rng.choice(GET_VERBS)} the {x} there."
    if kind == "drop":
        return f"{p} {rng.choice(DROP_VERBS)} the {x}{hint}."
    return f"{p} {rng.choice(GIVE_VERBS)} the {x} to {act[3]}."


def questions(task: str, w: World) -> list[QA]:
    """Every question of the task's kind that the world state answers, in a fixed order."""
    if task == "qa1":
        return [(f"Where is {p}?", w.loc[p]) for p in sorted(w.loc)]
    if task == "qa2":
        return [(f"Where is the {o}?", w.obj_loc[o]) for o in sorted(w.obj_loc)]
    if task == "qa3":
        # (object, room) -> the room before the object last entered it; needs an earlier room.
        before: dict[tuple[str, str], str] = {}
        for o, hist in sorted(w.history.items()):
            for i in range(1, len(hist)):
                before[(o, hist[i])] = hist[i - 1]
        return [(f"Where was the {o} before the {r}?", before[(o, r)]) for o, r in sorted(before)]
    if task == "qa5":
        if w.last_give is None:
            return []
        # Each form's key matches the last give, so "the latest matching give" is this one.
        p, o, q = w.last_give
        return [
            (f"What did {p} give to {q}?", o),
            (f"Who gave the {o} to {q}?", p),
            (f"Who did {p} give the {o} to?", q),
            (f"Who gave the {o}?", p),
            (f"Who received the {o}?", q),
        ]
    raise ValueError(f"unknown task {task!r}")


def _ask(qs: list[QA], rng: random.Random) -> list[QA]:
    """One question drawn from qs, first, then the others in order (empty if qs is)."""
    if not qs:
        return []
    first = rng.choice(qs)
    return [first] + [x for x in qs if x != first]


@dataclass(frozen=True)
class Wording:
    """How stories are worded. The defaults are bAbI's, and what `longqa eval` asks; the easier settings are
    training curricula, each of which states something that bAbI leaves to the reader.

    QA4: each fact names either of its two rooms first, and both question forms are asked. About the middle room
    of the line, the answer is a parity of the question's direction, its form, the fact's direction word and the
    room's place in the fact, and no one of them alone says anything. A model trained on the default alone
    answered those questions at chance throughout (the end rooms, which one fact names, at 100 %). With facts
    worded one way only and the first question form, the answer follows the room's place in the fact and the
    direction asked, which fine-tunes learned in 150-200 steps; from there, armt-v4-qa4c2 learned bAbI's wording
    (training/README.md).

    QA2/QA3: where a dropped object lies, and where a carried one came from, are the room its holder was in at
    the time, a latest-before lookup (training/qa2_cases.py, qa3_cases.py). A hinted fact says so outright, as
    "Mary dropped the milk in the office." and "Mary went to the garden from the office with the milk." do
    (training/README.md, sixteenth session)."""

    qa4_inverse: float = 0.5  # chance that a fact is worded from its other room: "The Y is south of the X"
    qa4_relative: bool = True  # also ask "What is the R north of?", not only "What is north of the R?"
    hints: float = 0.0  # chance that a drop, or a move by someone carrying something, is hinted as above


BABI = Wording()


def _qa4_story(rng: random.Random, wording: Wording = BABI) -> list[str]:
    """Two relation facts, in random order and wording, over three rooms in a line."""
    d, od = rng.choice((("north", "south"), ("east", "west")))
    a, b, c = rng.sample(ROOMS, 3)  # a is d of b, b is d of c
    facts = []
    for x, y in rng.sample([(a, b), (b, c)], 2):
        facts.append(f"The {x} is {d} of the {y}." if rng.random() < 1 - wording.qa4_inverse else f"The {y} is {od} of the {x}.")
    return facts


_RELATION = re.compile(r"The (\w+) is (north|south|east|west) of the (\w+)\.")


def _qa4_neighbours(facts: list[str]) -> dict[tuple[str, str], str]:
    nb: dict[tuple[str, str], str] = {}
    for f in facts:
        x, d, y = _RELATION.fullmatch(f).groups()  # type: ignore[union-attr]
        nb[(y, d)] = x  # x is d of y
        nb[(x, OPPOSITE[d])] = y
    return nb


def _qa4_questions(facts: list[str], wording: Wording = BABI) -> list[QA]:
    # Relations are bAbI's adjacency: "north of X" is X's direct neighbour, never one two steps away.
    options = []
    for (room, d), other in sorted(_qa4_neighbours(facts).items()):  # other is d of room
        options.append((f"What is {d} of the {room}?", other))
        if wording.qa4_relative:
            options.append((f"What is the {room} {OPPOSITE[d]} of?", other))  # room is opposite-d of other
    return options


def generate(task: str, rng: random.Random, wording: Wording = BABI, mid_story: bool = False) -> Sample:
    """A story and its questions. mid_story: also record Sample.asked_after (training's segment questions;
    it costs QA3 a third more time, so the eval's documents go without). The random draws are the same."""
    if task == "qa4":
        facts = _qa4_story(rng, wording)
        return _sample(task, list(map(Fact, facts)), _ask(_qa4_questions(facts, wording), rng))
    if task == "qa5":
        return _generate_qa5(rng)
    if task not in ("qa1", "qa2", "qa3"):
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    n = rng.randint(*{"qa1": QA1_FACTS, "qa2": QA2_FACTS, "qa3": QA3_FACTS}[task])
    while True:  # re-simulate at the same length until the question is defined
        w = World(PEOPLE)
        facts, after = [], []
        for _ in range(n):
            facts.append(w.step(rng, _WEIGHTS[task], wording.hints))
            if mid_story:
                after.append(questions(task, w))
        asked = _ask(questions(task, w), rng)
        if asked:
            return replace(_sample(task, facts, asked), asked_after=after)


def _sample(task: str, facts: list[Fact], asked: list[QA]) -> Sample:
    return Sample(task, [f.text for f in facts], *asked[0], others=asked[1:], where=[f.where for f in facts])


def _generate_qa5(rng: random.Random) -> Sample:
    n = rng.randint(*QA5_FACTS)
    w = World(PEOPLE_QA5)
    facts: list[Fact] = []
    cut: tuple[World, list[Fact]] | None = None
    # Simulate n facts (longer if no give has happened yet); the story is cut after the last give.
    while len(facts) < n or cut is None:
        gives = w.gives
        facts.append(w.step(rng, _WEIGHTS["qa5"]))
        if w.gives != gives:
            cut = copy.deepcopy(w), list(facts)
    w, facts = cut
    no_give = {k: v for k, v in _WEIGHTS["qa5"].items() if k != "give"}
    facts += [w.step(rng, no_give) for _ in range(rng.randint(*QA5_AFTER))]
    return _sample("qa5", facts, _ask(questions("qa5", w), rng))  # the world has a last give


def dense_stream(task: str, rng: random.Random, n_facts: int, wording: Wording = BABI) -> list[Item]:
    """n_facts facts with the questions valid at that point after every 1–3 facts (see Item).

    QA4 stories are two facts long, so its stream is a series of independent two-fact stories, each
    followed by 1–2 questions about it.
    """
    items: list[Item] = []
    if task == "qa4":
        while n_facts > 0:
            facts = _qa4_story(rng, wording)[:n_facts]
            n_facts -= len(facts)
            items += map(Fact, facts)
            items += [_ask(_qa4_questions(facts, wording), rng) for _ in range(rng.randint(1, 2))]
        return items
    if task not in _WEIGHTS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    w = World(PEOPLE_QA5 if task == "qa5" else PEOPLE)
    gap = rng.randint(1, 3)
    for _ in range(n_facts):
        items.append(w.step(rng, _WEIGHTS[task], wording.hints if task != "qa5" else 0.0))
        gap -= 1
        if gap <= 0:
            asked = _ask(questions(task, w), rng)
            if asked:  # nothing determined yet: try again after the next fact
                items.append(asked)
                gap = rng.randint(1, 3)
    return items


def _words(s: str) -> set[str]:
    return set(re.findall(r"[a-z]+", s))


def answer_labels(task: str, question: str, answer_text: str) -> set[str]:
    """The task labels (lower case) in the answer's first sentence, not counting those in the question."""
    labels = {label.lower() for label in LABELS[task]}
    return (labels & _words(answer_text.lower().split(".", 1)[0])) - _words(question.lower())


def score(task: str, question: str, answer_text: str, expected: str) -> bool:
    """BABILong's rule: the expected label must be the only task label in the answer's first sentence,
    not counting labels that already occur in the question."""
    return answer_labels(task, question, answer_text) == {expected.lower()}
