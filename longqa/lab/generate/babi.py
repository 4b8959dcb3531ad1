"""Seeded bAbI v1.2 story simulators for QA1–QA5 (docs/tasks.md).

Every story comes from simulating a small world with legal actions only, so each answer is determined by the
facts. Its shape follows bAbI's own training files (compared by `babi_stats`): how the facts are worded, which
actions happen, when a question is asked and about what. All randomness comes from the `random.Random` passed
in, never the global RNG.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

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

# Relative odds of each action kind among those legal at a step (bAbI's mix of facts comes out; see babi_stats).
_WEIGHTS: dict[str, dict[str, float]] = {
    "qa1": {"move": 1},
    "qa2": {"move": 11, "get": 5, "drop": 5},
    "qa3": {"move": 11, "get": 5, "drop": 5},
    "qa5": {"move": 6, "get": 3, "drop": 2, "give": 6},
}
# The share of gets and drops that end in "there" ("Mary got the milk there."), per task, alike for every verb.
THERE: dict[str, dict[str, float]] = {
    "qa2": {"get": 1.0, "drop": 0.2},
    "qa3": {"get": 0.2, "drop": 0.2},
    "qa5": {"get": 1.0, "drop": 0.2},
}

# bAbI's stories ask five questions, each after an even number of facts; BABILong makes one sample of each
# question, with the facts before it. The generator runs such a story up to a random one of its questions.
PER_STORY = 5
# At every second fact, bAbI asks with chance p if the story has news for the task among its last n facts:
# (n, p) when it did not ask at the previous chance, and when it did. News: QA1 a move; QA2 an object got,
# dropped or carried; QA3 an object found in another room than before; QA5 a give (see _news).
_ASK: dict[str, tuple[tuple[int, float], tuple[int, float]]] = {
    "qa1": ((2, 1.0), (2, 1.0)),
    "qa2": ((2, 0.6), (5, 0.8)),
    "qa3": ((8, 0.2), (8, 0.6)),
    "qa5": ((5, 1.0), (5, 1.0)),
}
# QA3: the chance that a question asks about a room the object left again, each step further back.
QA3_EARLIER = 0.3
# QA5: odds of each question form about the latest give (bAbI asks "What did P give to Q?" twice as often), and
# the chance that it asks the question of the previous chance again instead, though a give came since, as long as
# the give that question is about is among the last facts too.
QA5_FORM_ODDS = (2, 1, 1, 1, 1)
QA5_REPEAT = 0.1

Action = tuple[str, ...]  # ("move", p, room) | ("get", p, obj) | ("drop", p, obj) | ("give", p, obj, q)
QA = tuple[str, str]  # (question, answer)

# QA5's question forms: each names some slots of a give (p gave o to q) and asks for one other. It asks about the
# latest give with those slots (bAbI's answers agree, but for 20 stale ones: babi_stories).
QA5_FORMS: tuple[tuple[str, str], ...] = (
    ("What did {p} give to {q}?", "o"),
    ("Who gave the {o} to {q}?", "p"),
    ("Who did {p} give the {o} to?", "q"),
    ("Who gave the {o}?", "p"),
    ("Who received the {o}?", "q"),
)


@dataclass(frozen=True)
class Fact:
    text: str


# A fact, or every (question, answer) pair valid at that point: the one to ask first, then the rest.
Item = Fact | list[QA]


@dataclass
class Sample:
    task: str
    facts: list[str]
    question: str
    answer: str
    others: list[QA] = field(default_factory=list)  # the other questions the story answers there (training asks several)
    # from generate(..., mid_story=True), QA1-QA3 and QA5: per fact, every question the story answers right after it
    asked_after: list[list[QA]] = field(default_factory=list)


class World:
    """What a story's facts say: people's rooms, who holds what, where each object is and has been, every give.

    bAbI puts every person and object in a room before a story starts and does not say which: people pick things
    up before their first move, and hand them to people whose room was never stated. A World made with `rng` draws
    such a hidden start and takes only actions that are legal in it (`step`); one made without follows the facts
    alone (`apply`), as replaying bAbI's own stories does. Questions read only what the facts say."""

    def __init__(self, people: tuple[str, ...], rng: random.Random | None = None) -> None:
        self.people = people
        self.loc: dict[str, str] = {}  # person -> room of their last move; absent until their first move
        self.holder: dict[str, str] = {}  # object -> person holding it
        self.obj_loc: dict[str, str] = {}  # object -> room the facts put it in; absent until they do
        self.history: dict[str, list[str]] = {}  # object -> those rooms in order, no immediate repeats
        self.gives: list[tuple[str, str, str]] = []  # (giver, object, receiver), in story order
        self.given: dict[str, str] = {}  # QA5 question -> its answer: by the latest give it matches
        # The true room of every person, and of every object nobody holds (a held one is where its holder is).
        self.at: dict[str, str] = {x: rng.choice(ROOMS) for x in (*people, *OBJECTS)} if rng else {}

    def legal(self) -> dict[str, list[Action]]:
        acts: dict[str, list[Action]] = {"move": [], "get": [], "drop": [], "give": []}
        for p in self.people:
            # Moving to the room one is already in would add nothing (and no history step).
            acts["move"] += [("move", p, r) for r in ROOMS if r != self.at[p]]
        for o in OBJECTS:
            p = self.holder.get(o)
            if p is None:
                acts["get"] += [("get", q, o) for q in self.people if self.at[q] == self.at[o]]
            else:
                acts["drop"].append(("drop", p, o))
                acts["give"] += [("give", p, o, q) for q in self.people if q != p and self.at[q] == self.at[p]]
        return acts

    def _place(self, obj: str, room: str) -> None:
        self.obj_loc[obj] = room
        hist = self.history.setdefault(obj, [])
        if not hist or hist[-1] != room:
            hist.append(room)

    def apply(self, act: Action) -> None:
        kind, p, x = act[0], act[1], act[2]
        if kind == "move":
            self.loc[p] = self.at[p] = x
            for o, h in self.holder.items():
                if h == p:
                    self._place(o, x)
        elif kind == "get":
            self.holder[x] = p
            if p in self.loc:  # else it stays where the facts last put it, if anywhere: the getter is there too
                self._place(x, self.loc[p])
        elif kind == "drop":
            del self.holder[x]
            if p in self.at:
                self.at[x] = self.at[p]
        else:
            self.holder[x] = act[3]
            self.gives.append((p, x, act[3]))
            self.given.update(qa5_questions(self.gives[-1]))

    def step(self, rng: random.Random, task: str) -> tuple[Action, str]:
        """Take one random legal action of the task's kinds; return it and its sentence."""
        acts = self.legal()
        weights = _WEIGHTS[task]
        kinds = [k for k in weights if acts[k]]
        kind = rng.choices(kinds, [weights[k] for k in kinds])[0]
        act = rng.choice(acts[kind])
        self.apply(act)
        return act, sentence(act, rng, THERE.get(task, {}).get(kind, 0.0))


def sentence(act: Action, rng: random.Random, there: float = 0.0) -> str:
    """The action in bAbI's words; a get or a drop ends in "there" with chance `there`."""
    kind, p, x = act[0], act[1], act[2]
    if kind == "move":
        return f"{p} {rng.choice(MOVE_VERBS)} the {x}."
    if kind == "give":
        return f"{p} {rng.choice(GIVE_VERBS)} the {x} to {act[3]}."
    verb = rng.choice(GET_VERBS if kind == "get" else DROP_VERBS)
    return f"{p} {verb} the {x}{' there' if rng.random() < there else ''}."


def qa5_questions(give: tuple[str, str, str]) -> list[QA]:
    """The QA5_FORMS questions about a give, and their answers if it is the latest give they match."""
    p, o, q = give
    slots = {"p": p, "o": o, "q": q}
    return [(form.format(**slots), slots[slot]) for form, slot in QA5_FORMS]


def _qa3_before(w: World) -> dict[tuple[str, str], str]:
    """(object, room) -> the room the object was in before it last entered that room; needs an earlier room."""
    before: dict[tuple[str, str], str] = {}
    for o, hist in w.history.items():
        for i in range(1, len(hist)):
            before[(o, hist[i])] = hist[i - 1]
    return before


def questions(task: str, w: World) -> list[QA]:
    """Every question of the task's kind that the world state answers, in a fixed order."""
    if task == "qa1":
        return [(f"Where is {p}?", w.loc[p]) for p in sorted(w.loc)]
    if task == "qa2":
        return [(f"Where is the {o}?", w.obj_loc[o]) for o in sorted(w.obj_loc)]
    if task == "qa3":
        return [(f"Where was the {o} before the {r}?", a) for (o, r), a in sorted(_qa3_before(w).items())]
    if task == "qa5":
        return sorted(w.given.items())
    raise ValueError(f"unknown task {task!r}")


def put_first(qs: list[QA], first: QA) -> list[QA]:
    """first, then the other questions of qs in their order (see Item)."""
    return [first] + [x for x in qs if x != first]


def _ask(qs: list[QA], rng: random.Random) -> list[QA]:
    """One question drawn from qs, first, then the others in order (empty if qs is)."""
    return put_first(qs, rng.choice(qs)) if qs else []


def _news(task: str, w: World, act: Action, lengths: dict[str, int]) -> set[object]:
    """Whom or what a fact, just applied, gives the task something to ask about (see _ASK); lengths: each object's
    history length before it."""
    kind, p = act[0], act[1]
    if task == "qa1":
        return {p}
    if task == "qa5":
        return {w.gives[-1]} if kind == "give" else set()
    touched = {act[2]} if kind != "move" else {o for o, h in w.holder.items() if h == p}
    if task == "qa3":
        return {o for o in touched if len(w.history.get(o, ())) > max(1, lengths.get(o, 0))}
    return touched


def _question(task: str, w: World, rng: random.Random, news: set[object], previous: QA | None) -> list[QA]:
    """The question bAbI would ask now, given the news among the last facts and the question asked at the previous
    chance (if any), then the other questions the world answers; empty if there is none to ask."""
    qs = questions(task, w)
    if task == "qa1":  # about anyone whose room is known
        return _ask(qs, rng)
    if task == "qa2":
        known = [o for o in sorted(news) if o in w.obj_loc]
        if not known:
            return []
        o = rng.choice(known)
        return put_first(qs, (f"Where is the {o}?", w.obj_loc[o]))
    if task == "qa3":
        before = _qa3_before(w)
        moved = [o for o in sorted(news) if len(w.history.get(o, ())) > 1]
        if not moved:
            return []
        o = rng.choice(moved)
        # The room it entered last, or with chance QA3_EARLIER one it entered before that, and so on.
        rooms = [r for r in dict.fromkeys(reversed(w.history[o])) if (o, r) in before]
        k = 0
        while k + 1 < len(rooms) and rng.random() < QA3_EARLIER:
            k += 1
        return put_first(qs, (f"Where was the {o} before the {rooms[k]}?", before[(o, rooms[k])]))
    if not news:
        return []
    if previous is not None and rng.random() < QA5_REPEAT:
        about = next(g for g in reversed(w.gives) if previous[0] in dict(qa5_questions(g)))
        if about in news:
            return put_first(qs, (previous[0], dict(qs)[previous[0]]))
    return put_first(qs, rng.choices(qa5_questions(w.gives[-1]), QA5_FORM_ODDS)[0])


def _story(task: str, rng: random.Random, mid_story: bool) -> Sample:
    """A QA1-QA3 or QA5 story run bAbI's way up to a random one of its PER_STORY questions."""
    w = World(PEOPLE_QA5 if task == "qa5" else PEOPLE, rng)
    facts: list[str] = []
    after: list[list[QA]] = []
    news: list[set[object]] = []  # per fact, see _news
    previous: QA | None = None  # the question asked at the previous chance, if any
    due = rng.randint(1, PER_STORY)
    while True:
        for _ in range(2):
            lengths = {o: len(h) for o, h in w.history.items()}
            act, text = w.step(rng, task)
            facts.append(text)
            news.append(_news(task, w, act, lengths))
            if mid_story:
                after.append(questions(task, w))
        n, chance = _ASK[task][previous is not None]
        recent = set().union(*news[-n:])
        asked = _question(task, w, rng, recent, previous) if recent and rng.random() < chance else []
        previous = asked[0] if asked else None
        if asked:
            due -= 1
            if not due:
                return Sample(task, facts, *asked[0], others=asked[1:], asked_after=after)


@dataclass(frozen=True)
class Wording:
    """How QA4 stories are worded. The defaults are bAbI's, and what `longqa eval` asks; the others are training
    curricula, which state something that bAbI leaves to the reader.

    QA4: each fact names either of its two rooms first, and both question forms are asked. About the middle room
    of the line, the answer is a parity of the question's direction, its form, the fact's direction word and the
    room's place in the fact, and no one of them alone says anything. A model trained on such wording alone
    (qa4_inverse=0.5) answered those questions at chance throughout (the end rooms, which one fact names, at 100 %). With facts
    worded one way only and the first question form, the answer follows the room's place in the fact and the
    direction asked, which fine-tunes learned in 150-200 steps; from there, armt-v4-qa4c2 learned bAbI's wording
    (docs/decisions.md)."""

    # None: bAbI's wording, where a fact names the line's middle room second two times in three, and the question
    # asks about a fact's second room. Else the chance that a fact is worded from its other room ("The Y is south
    # of the X"), each question equally likely.
    qa4_inverse: float | None = None
    qa4_relative: bool = True  # also ask "What is the R north of?", not only "What is north of the R?"


BABI = Wording()


def _qa4_story(rng: random.Random, wording: Wording = BABI) -> list[str]:
    """Two relation facts, in random order and wording, over three rooms in a line."""
    d, od = rng.choice((("north", "south"), ("east", "west")))
    a, b, c = rng.sample(ROOMS, 3)  # a is d of b, b is d of c
    facts = []
    for x, y in rng.sample([(a, b), (b, c)], 2):
        if wording.qa4_inverse is None:  # "The y is od of the x" names b second where "The x is d of the y" does not
            inverse = (rng.random() < 2 / 3) != (y == b)
        else:
            inverse = rng.random() < wording.qa4_inverse
        facts.append(f"The {y} is {od} of the {x}." if inverse else f"The {x} is {d} of the {y}.")
    return facts


RELATION = re.compile(r"The (\w+) is (north|south|east|west) of the (\w+)\.")


def _qa4_neighbours(facts: list[str]) -> dict[tuple[str, str], str]:
    nb: dict[tuple[str, str], str] = {}
    for f in facts:
        x, d, y = RELATION.fullmatch(f).groups()  # type: ignore[union-attr]
        nb[(y, d)] = x  # x is d of y
        nb[(x, OPPOSITE[d])] = y
    return nb


def qa4_questions(facts: list[str], wording: Wording = BABI) -> list[QA]:
    """Every question the QA4 facts answer, in a fixed order."""
    # Relations are bAbI's adjacency: "north of X" is X's direct neighbour, never one two steps away.
    options = []
    for (room, d), other in sorted(_qa4_neighbours(facts).items()):  # other is d of room
        options.append((f"What is {d} of the {room}?", other))
        if wording.qa4_relative:
            options.append((f"What is the {room} {OPPOSITE[d]} of?", other))  # room is opposite-d of other
    return options


def _qa4_ask(facts: list[str], rng: random.Random, wording: Wording = BABI) -> list[QA]:
    """The QA4 questions, the one to ask first: under bAbI's wording, as bAbI asks, about a random fact's second
    room in its own direction word or the opposite one ("The office is north of the kitchen": "What is north of
    the kitchen?", "What is the kitchen south of?"); under a curriculum's, any."""
    qs = qa4_questions(facts, wording)
    if wording.qa4_inverse is not None:
        return _ask(qs, rng)
    x, d, y = RELATION.fullmatch(rng.choice(facts)).groups()  # type: ignore[union-attr]
    forms = [f"What is {d} of the {y}?"] + ([f"What is the {y} {OPPOSITE[d]} of?"] if wording.qa4_relative else [])
    return put_first(qs, (rng.choice(forms), x))


def generate(task: str, rng: random.Random, wording: Wording = BABI, mid_story: bool = False) -> Sample:
    """A story up to one of its questions, bAbI's way, and the other questions it answers there. mid_story: also
    record Sample.asked_after (training's segment questions; it costs time, so the eval's documents go without).
    The random draws are the same."""
    if task == "qa4":
        facts = _qa4_story(rng, wording)
        asked = _qa4_ask(facts, rng, wording)
        return Sample(task, facts, *asked[0], others=asked[1:])
    if task not in _ASK:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return _story(task, rng, mid_story)


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
            items += [_qa4_ask(facts, rng, wording) for _ in range(rng.randint(1, 2))]
        return items
    if task not in _ASK:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    w = World(PEOPLE_QA5 if task == "qa5" else PEOPLE, rng)
    gap = rng.randint(1, 3)
    for _ in range(n_facts):
        items.append(Fact(w.step(rng, task)[1]))
        gap -= 1
        if gap <= 0 and (asked := _ask(questions(task, w), rng)):  # nothing determined yet: try after the next fact
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
