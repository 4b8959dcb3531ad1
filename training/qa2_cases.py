"""QA2 accuracy by what happened to the object asked about: still held; dropped where its dropper still is;
dropped, and the dropper moved on since. The last case needs "where was the dropper at the time of the
drop", a latest-before lookup; it is split again by whether the dropper's last move before the drop is in the
drop's segment or an earlier one. The documents and answers are `longqa eval`'s (evaluate_cell). Usage:
  python training/qa2_cases.py [-m MODEL] [--length 0] [-n 300] [--batch 100] [--noise FILE ...]
"""

from __future__ import annotations

import re

from by_case import documents, print_table

from longqa import babi


CASES = ("held", "dropped, dropper still there", "dropped, dropper moved on")
# In the moved-on case: is the move that put the dropper where they dropped it in the drop's segment, or must
# the lookup at the drop read it from memory?
SEGMENT_CASES = ("the drop's segment", "an earlier segment")


def _verbs(verbs: tuple[str, ...]) -> str:
    return "|".join(map(re.escape, verbs))


ACTIONS = {
    "move": re.compile(rf"(\w+) (?:{_verbs(babi.MOVE_VERBS)}) the (\w+)\."),
    "get": re.compile(rf"(\w+) (?:{_verbs(babi.GET_VERBS)}) the (\w+) there\."),
    "drop": re.compile(rf"(\w+) (?:{_verbs(babi.DROP_VERBS)}) the (\w+)\."),
}


def replay(fact: str) -> tuple[str, re.Match]:
    """The kind of action a fact is, and its match in ACTIONS (a hinted fact, babi.Wording.hints, as its plain one)."""
    plain = re.sub(r" (?:in|from) the \w+(?: with .*)?\.$", ".", fact)
    return next((k, m) for k, rx in ACTIONS.items() if (m := rx.fullmatch(plain)))


def case(sample: babi.Sample) -> tuple[str, str]:
    """Which of CASES the sample's question is, by replaying its facts, and where the last holder is now."""
    world, last_holder = babi.World(babi.PEOPLE), {}
    for fact in sample.facts:
        kind, m = replay(fact)
        world.apply((kind, m[1], m[2]))
        if kind == "get":
            last_holder[m[2]] = m[1]
    obj = re.fullmatch(r"Where is the (\w+)\?", sample.question)[1]
    now = world.loc[last_holder[obj]]
    if obj in world.holder:
        return CASES[0], now
    return (CASES[1] if now == world.obj_loc[obj] else CASES[2]), now


def drop_and_move(sample: babi.Sample) -> tuple[int, int]:
    """Indices in sample.facts of the object's last drop and of its dropper's last move before it."""
    obj = re.fullmatch(r"Where is the (\w+)\?", sample.question)[1]
    acts = [replay(f) for f in sample.facts]
    drop = max(i for i, (k, m) in enumerate(acts) if k == "drop" and m[2] == obj)
    who = acts[drop][1][1]
    return drop, max(i for i, (k, m) in enumerate(acts[:drop]) if k == "move" and m[1] == who)


def main() -> None:
    args, docs = documents("qa2", 300)
    right: dict[str, list[bool]] = {c: [] for c in CASES}
    by_segment: dict[str, list[bool]] = {SEGMENT_CASES[0]: [], SEGMENT_CASES[1]: []}
    holder_now = 0  # wrong answers of the last case that name the room the dropper is in now
    for s, doc, hay in docs:
        kind, now = case(s)
        right[kind].append(doc["correct"])
        if kind == CASES[2]:
            holder_now += babi.answer_labels("qa2", s.question, doc["answer"]) == {now}
            drop, move = (int(hay.fact_ends[i]) // args.segment_len for i in drop_and_move(s))
            by_segment[SEGMENT_CASES[drop != move]].append(doc["correct"])
    print_table(f"QA2 at {args.length} ({args.model})", right)
    wrong = len(right[CASES[2]]) - sum(right[CASES[2]])
    print(f"{CASES[2]}: {holder_now} of its {wrong} wrong answers name the room the dropper is in now")
    print_table(f"{CASES[2]}, by the segment of the dropper's last move", by_segment)


if __name__ == "__main__":
    main()
