"""The questions the model answers, recognised in what a user typed, and the world they are about.

normalize_question() is the ONE place where a question as typed becomes the sentence the model reads: the CLI
and the evaluator both call it. It changes nothing a question means: case, spacing, a missing or spaced `?`
and `where's` are made the trained form's; a name, object or room is written as the world writes it.
parse_question() also says whether the model can answer the question at all, and if not, why.

Nothing here imports torch: the CLI checks questions before it loads anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from longqa.errors import show

# The world the model was trained on (bAbI v1.2): every name, room and object its answers can be.
PEOPLE = ("John", "Mary", "Sandra", "Daniel")
PEOPLE_QA5 = ("Bill", "Fred", "Jeff", "Mary")
ROOMS = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
OBJECTS = ("apple", "football", "milk")
DIRECTIONS = ("north", "south", "east", "west")
ALL_PEOPLE = tuple(dict.fromkeys(PEOPLE + PEOPLE_QA5))
ENTITIES = ALL_PEOPLE + ROOMS + OBJECTS  # what a question can name, and what a text may mention

# The answer line of a question the model cannot answer (README, "What it answers").
NO_ANSWER = "?"

# The question forms of each task, with any name (a capitalised word) or any "the <word>" in the slots:
# what a question must look like for the model to have seen its like in training (exact, canonical text).
_P = r"[A-Z][\w'-]*"
_X = r"the [\w'-]+"
_DIR = "(?:north|south|east|west)"
QUESTION_FORMS: dict[str, tuple[re.Pattern, ...]] = {
    task: tuple(re.compile(form) for form in forms)
    for task, forms in {
        "qa1": (rf"Where is {_P}\?",),
        "qa2": (rf"Where is {_X}\?",),
        "qa3": (rf"Where was {_X} before {_X}\?",),
        "qa4": (rf"What is {_DIR} of {_X}\?", rf"What is {_X} {_DIR} of\?"),
        "qa5": (
            rf"What did {_P} give to {_P}\?",
            rf"Who gave {_X} to {_P}\?",
            rf"Who did {_P} give {_X} to\?",
            rf"Who gave {_X}\?",
            rf"Who received {_X}\?",
        ),
    }.items()
}

# What a user is told the model answers (one line).
FORMS_HELP = (
    "Where is Mary? | Where is the milk? | Where was the milk before the kitchen? | What is north of the kitchen? | "
    "What is the kitchen north of? | What did Mary give to Fred? | Who gave the milk to Fred? | "
    "Who did Mary give the milk to? | Who gave the milk? | Who received the milk?"
)
WORLD_HELP = f"people {', '.join(ALL_PEOPLE)}; objects {', '.join(OBJECTS)}; rooms {', '.join(ROOMS)}"


def question_task(question: str) -> str | None:
    """The task whose question form `question` has (a normalised sentence), or None for any other question."""
    for task, forms in QUESTION_FORMS.items():
        if any(form.fullmatch(question) for form in forms):
            return task
    return None


# ---- reading what a user typed ------------------------------------------------------------------

# Slots: p, q a person; o an object; r a room; d a direction. Matched on the lower-cased question.
_W = r"[\w'-]+"
_THE = r"(?:the )?"
_TYPED: tuple[tuple[str, re.Pattern, str], ...] = tuple(
    (task, re.compile(pattern), template)
    for task, pattern, template in (
        ("qa3", rf"where was {_THE}(?P<o>{_W}) before {_THE}(?P<r>{_W})", "Where was the {o} before the {r}?"),
        ("qa4", rf"what is (?P<d>{'|'.join(DIRECTIONS)}) of {_THE}(?P<r>{_W})", "What is {d} of the {r}?"),
        ("qa4", rf"what is {_THE}(?P<r>{_W}) (?P<d>{'|'.join(DIRECTIONS)}) of", "What is the {r} {d} of?"),
        ("qa5", rf"what did (?P<p>{_W}) give to (?P<q>{_W})", "What did {p} give to {q}?"),
        ("qa5", rf"who gave {_THE}(?P<o>{_W}) to (?P<q>{_W})", "Who gave the {o} to {q}?"),
        ("qa5", rf"who did (?P<p>{_W}) give {_THE}(?P<o>{_W}) to", "Who did {p} give the {o} to?"),
        ("qa5", rf"who gave {_THE}(?P<o>{_W})", "Who gave the {o}?"),
        ("qa5", rf"who received {_THE}(?P<o>{_W})", "Who received the {o}?"),
        # "Where is X": a person (qa1) or an object (qa2), told apart by the word itself below.
        ("qa1", rf"where is (?P<x>{_THE}{_W})", ""),
    )
)
_CANON = {name.lower(): name for name in ENTITIES}
_KIND = {**{p.lower(): "person" for p in ALL_PEOPLE}, **{r: "room" for r in ROOMS}, **{o: "object" for o in OBJECTS}}
_SLOT_KIND = {"p": "person", "q": "person", "o": "object", "r": "room"}
_CONTRACTIONS = re.compile(r"\b(where|what|who)\s*['\u2019]s\b", re.IGNORECASE)


@dataclass(frozen=True)
class Question:
    asked: str  # as the user typed it
    text: str  # what the model reads: the trained form if it has one, else the typed text tidied
    task: str | None  # qa1 ... qa5, or None: not a form the model answers
    names: tuple[str, ...] = ()  # the people, objects and rooms it names (as the world writes them)
    problem: str | None = None  # why the model cannot answer it; None if it can

    @property
    def supported(self) -> bool:
        return self.problem is None


def _tidy(text: str) -> str:
    """Whitespace collapsed, any run of trailing `?` (with spaces) made one `?`, `where's` made `where is`."""
    text = " ".join(text.split())
    text = _CONTRACTIONS.sub(lambda m: f"{m.group(1)} is", text)
    return re.sub(r"[\s?\uff1f]+$", "", text).strip() + "?"


def _unknown(word: str, kind: str) -> str:
    known = {"person": ALL_PEOPLE, "object": OBJECTS, "room": ROOMS}[kind]
    return f"the model knows no {kind} called {show(word, 30)} (it knows {', '.join(known)})"


def parse_question(asked: str) -> Question:
    """What the model makes of a question as typed: its trained form, task and names, or why it has none."""
    tidy = _tidy(asked)
    low = tidy[:-1].lower()
    for task, pattern, template in _TYPED:
        m = pattern.fullmatch(low)
        if not m:
            continue
        slots = m.groupdict()
        typed = tidy[:-1] if len(tidy) - 1 == len(low) else low  # the words as typed, for messages
        shown = {k: typed[m.start(k) : m.end(k)] for k in slots}
        if task == "qa1":  # "Where is Mary?" or "Where is the milk?"
            word = slots["x"].removeprefix("the ")
            kind = _KIND.get(word)
            as_typed = shown["x"][len(slots["x"]) - len(word) :]
            if kind == "person" and not slots["x"].startswith("the "):
                return Question(asked, f"Where is {_CANON[word]}?", "qa1", (_CANON[word],))
            if kind == "object":
                return Question(asked, f"Where is the {word}?", "qa2", (word,))
            if kind == "room":
                return Question(asked, tidy, None, (), f"rooms do not move: the model answers where a person or an object is, not {show(as_typed, 30)}")
            return Question(asked, tidy, None, (), f"the model knows no person or object called {show(as_typed, 30)} ({WORLD_HELP})")
        values = {}
        for slot, value in slots.items():
            kind = _SLOT_KIND.get(slot)
            if kind is None:  # a direction
                values[slot] = value
            elif _KIND.get(value) != kind:
                return Question(asked, tidy, None, (), _unknown(shown[slot], kind))
            else:
                values[slot] = _CANON[value]
        names = tuple(dict.fromkeys(v for s, v in values.items() if s != "d"))
        return Question(asked, template.format(**values), task, names)
    return Question(asked, tidy, None, (), "not a question form the model was trained on")


def normalize_question(asked: str) -> str:
    """The sentence the model reads for a question as typed: its trained form when it has one ("where is
    mary" -> "Where is Mary?"), else the typed text with whitespace collapsed and one `?`. A question already in
    trained form (as the generator writes them) comes back unchanged. This is the one place questions are
    normalised: the CLI and the evaluator both call it."""
    return parse_question(asked).text


# ---- what a text mentions -----------------------------------------------------------------------


_WORD = {name: re.compile(rf"\b{re.escape(name.lower())}\b") for name in ENTITIES}


class MentionScanner:
    """The world's names found in a text given in chunks, in any case: a question about someone the text
    never mentions gets no answer rather than a confident guess. A substring search (fast) finds candidates,
    a word-boundary match confirms them; once every name has been found it stops looking."""

    _CARRY = 16  # longer than any name: one split across two chunks is still found

    def __init__(self) -> None:
        self.found: set[str] = set()
        self._left = list(ENTITIES)
        self._tail = ""

    def feed(self, text: str) -> None:
        if not self._left:
            return
        window = self._tail + text.lower()
        self._tail = window[-self._CARRY :]
        for name in [n for n in self._left if n.lower() in window and _WORD[n].search(window)]:
            self.found.add(name)
            self._left.remove(name)
