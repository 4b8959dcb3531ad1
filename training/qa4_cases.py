"""QA4 accuracy by the room asked about: an end room of the line, which one fact names, or the middle room,
which both facts name. About the middle room the answer is a parity of the question's direction and form
and the fact's direction word and the room's place in it (babi.Wording); a model without that answers
at chance there. The documents and answers are `longqa eval`'s (evaluate_cell). Usage:
  python training/qa4_cases.py [-m MODEL] [--length 0] [-n 400] [--batch 100] [--noise FILE ...]
"""

from __future__ import annotations

import re

from by_case import documents, print_table

from longqa import babi


CASES = ("end room", "middle room")


def case(sample: babi.Sample) -> str:
    room = re.search(r"the (\w+)", sample.question)[1]
    return CASES[all(f"the {room}" in f.lower() for f in sample.facts)]


def main() -> None:
    args, docs = documents("qa4", 400)
    right: dict[str, list[bool]] = {c: [] for c in CASES}
    for s, doc, _ in docs:
        right[case(s)].append(doc["correct"])
    print_table(f"QA4 at {args.length} ({args.model})", right)


if __name__ == "__main__":
    main()
