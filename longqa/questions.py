"""The question forms the model was trained to answer, recognised in what a user typed."""

from __future__ import annotations

import re

# The world the model was trained on (bAbI v1.2): every name, room and object its answers can be.
PEOPLE = ("John", "Mary", "Sandra", "Daniel")
PEOPLE_QA5 = ("Bill", "Fred", "Jeff", "Mary")
ROOMS = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
OBJECTS = ("apple", "football", "milk")

# The question forms of each task, with any name (a capitalised word) or any "the <word>" in the slots:
# what a question must look like for the model to have seen its like in training.
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


def question_task(question: str) -> str | None:
    """The task whose question form `question` has (a normalised sentence), or None for any other question."""
    for task, forms in QUESTION_FORMS.items():
        if any(form.fullmatch(question) for form in forms):
            return task
    return None
