"""QA3 accuracy by where the room asked about sits in the object's history, and what the wrong answers name.
"Where was the apple before the kitchen?" is answered by the move that last carried the apple into the
kitchen: the room its mover was in before, a latest-before lookup like QA2's dropped-and-moved-on case.
The documents and answers are `longqa eval`'s (evaluate_cell). Usage:
  python training/qa3_cases.py [-m MODEL] [--length 0] [-n 300] [--batch 100] [--noise FILE ...]
"""

from __future__ import annotations

import re
from collections import Counter

from by_case import documents, print_table
from qa2_cases import replay

from longqa import babi

CASES = ("the object's room now", "an earlier room")
WRONG = ("the object's room before the answer", "another room of its history", "a room it never was in", "no room")


def history(sample: babi.Sample) -> list[str]:
    world = babi.World(babi.PEOPLE)
    for fact in sample.facts:
        kind, m = replay(fact)
        world.apply((kind, m[1], m[2]))
    obj = re.fullmatch(r"Where was the (\w+) before the \w+\?", sample.question)[1]
    return world.history[obj]


def main() -> None:
    args, docs = documents("qa3", 300)
    right: dict[str, list[bool]] = {c: [] for c in CASES}
    wrong: Counter[str] = Counter()
    for s, doc, _ in docs:
        hist = history(s)
        room = re.search(r"before the (\w+)\?", s.question)[1]
        last = max(i for i, r in enumerate(hist) if r == room)  # the last time it entered the room
        right[CASES[last != len(hist) - 1]].append(doc["correct"])
        if doc["correct"]:
            continue
        said = babi.answer_labels("qa3", s.question, doc["answer"])
        if len(said) != 1:
            wrong[WRONG[3]] += 1
        elif last >= 2 and said == {hist[last - 2]}:
            wrong[WRONG[0]] += 1
        else:
            wrong[WRONG[1] if said <= set(hist) else WRONG[2]] += 1
    print_table(f"QA3 at {args.length} ({args.model})", right)
    print("wrong answers: " + ", ".join(f"{c} {wrong[c]}" for c in WRONG))


if __name__ == "__main__":
    main()
