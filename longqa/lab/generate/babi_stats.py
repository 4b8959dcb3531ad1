"""Statistics of bAbI's own training stories beside the generator's, per task: `python -m
longqa.lab.generate.babi_stats [--n 2000] [--seed 0] [--tasks qa1,qa3]`.

Both sides are BABILong samples (a question and the facts before it): every question of bAbI's file, and n seeded
babi.generate draws. Each sample's facts are parsed back and replayed the same way for both.
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator

from longqa.lab.generate import babi, babi_stories
from longqa.lab.generate.babi import DROP_VERBS, GET_VERBS, GIVE_VERBS, MOVE_VERBS, OPPOSITE, QA5_FORMS, Sample, World

VERBS = {"move": MOVE_VERBS, "get": GET_VERBS, "drop": DROP_VERBS, "give": GIVE_VERBS}


def real_samples(task: str) -> Iterator[Sample]:
    """Every question of bAbI's file that `babi_stories.sample` may ask, as a sample."""
    bank = babi_stories.load(task)
    for i, j in bank.askable:
        story = bank.stories[i]
        n, asked = story.asked[j]
        valid = babi_stories.world_questions(task, story)[j]
        yield Sample(task, list(story.facts[:n]), *asked, others=babi.put_first(valid, asked)[1:])


def generated_samples(task: str, n: int, seed: int = 0) -> Iterator[Sample]:
    rng = random.Random(seed)
    return (babi.generate(task, rng) for _ in range(n))


def _share(counts: Counter, key: object) -> float:
    total = sum(counts.values())
    return counts[key] / total if total else float("nan")


def _quantiles(name: str, xs: list[int]) -> dict[str, float]:
    deciles = statistics.quantiles(xs, n=10) if len(xs) > 1 else [float(xs[0])] * 9
    return {f"{name}: mean": statistics.fmean(xs), f"{name}: p10": deciles[0], f"{name}: median": deciles[4],
            f"{name}: p90": deciles[8], f"{name}: max": max(xs)}


def _verb(kind: str, fact: str) -> str:
    return next(v for v in VERBS[kind] if f" {v} the " in fact)


def _qa4(samples: Iterable[Sample]) -> dict[str, float]:
    c: Counter = Counter()
    for s in samples:
        rel = [babi.RELATION.fullmatch(f).groups() for f in s.facts]  # type: ignore[union-attr]
        rooms = [r for x, _, y in rel for r in (x, y)]
        middle = next(r for r in rooms if rooms.count(r) == 2)
        c["facts"] += len(rel)
        c["middle second"] += sum(y == middle for _, _, y in rel)
        c["north/east"] += sum(d in ("north", "east") for _, d, _ in rel)
        c["samples"] += 1
        dir_of = s.question.split()[2] in OPPOSITE
        c["dir_of"] += dir_of
        words = s.question.rstrip("?").split()
        room, d = (words[-1], words[2]) if dir_of else (words[3], words[4])
        c["about middle"] += room == middle
        # bAbI asks about a fact's second room, in its direction word ("What is north of the y?") or the opposite
        c["about a fact's second room"] += any(
            y == room and x == s.answer and d == (dd if dir_of else OPPOSITE[dd]) for x, dd, y in rel)
        c["answers"] += len(s.others) + 1
        c["answer " + s.answer] += 1
    n = c["samples"]
    return {
        "samples": n,
        "facts naming the middle room second": c["middle second"] / c["facts"],
        "facts in north/east": c["north/east"] / c["facts"],
        'form "What is D of the R?"': c["dir_of"] / n,
        "asked about the middle room": c["about middle"] / n,
        "asked about a fact's second room": c["about a fact's second room"] / n,
        "questions answerable": c["answers"] / n,
        **{f"answer {r}": c[f"answer {r}"] / n for r in babi.LABELS["qa4"]},
    }


def stats(task: str, samples: Iterable[Sample]) -> dict[str, float]:
    """Named statistics of the samples (shares in 0-1)."""
    if task == "qa4":
        return _qa4(samples)
    lengths, people, objects, answerable, after_give = [], [], [], [], []
    kinds: Counter = Counter()
    verbs: dict[str, Counter] = {k: Counter() for k in VERBS}
    there: Counter = Counter()
    answers: Counter = Counter()
    forms: Counter = Counter()
    c: Counter = Counter()
    for s in samples:
        w = World(babi.PEOPLE_QA5 if task == "qa5" else babi.PEOPLE)
        named: set[str] = set()
        for f in s.facts:
            act = babi_stories.parse_fact(f)
            kind = act[0]
            kinds[kind] += 1
            verbs[kind][_verb(kind, f)] += 1
            named.update(act[1:])
            if kind in ("get", "drop"):
                there[kind, f.endswith(" there.")] += 1
            if kind == "get":
                c["gets", act[1] not in w.loc] += 1
            w.apply(act)
        lengths.append(len(s.facts))
        people.append(len(named & set(w.people)))
        objects.append(len(named & set(babi.OBJECTS)))
        answerable.append(len(s.others) + 1)
        answers[s.answer] += 1
        if task == "qa3":
            o, room = s.question.removeprefix("Where was the ").rstrip("?").split(" before the ")
            c["qa3", w.obj_loc.get(o) == room] += 1
        if task == "qa5":
            case = babi_stories.qa5_case(s)
            forms[case["form"]] += 1
            c["qa5 later give", case["gives_after"] > 0] += 1
            after_give.append(case["facts_after"])
    out: dict[str, float] = {"samples": len(lengths), **_quantiles("facts before the question", lengths)}
    total = sum(kinds.values())
    for kind in VERBS:
        if kinds[kind]:
            out[f"{kind}s among facts"] = kinds[kind] / total
    for kind in VERBS:
        for v in VERBS[kind] if kinds[kind] else ():
            out[f"{kind}: {v}"] = _share(verbs[kind], v)
    for kind in ("get", "drop"):
        if kinds[kind]:
            out[f'{kind}s ending in "there"'] = _share(Counter({k[1]: n for k, n in there.items() if k[0] == kind}), True)
    if kinds["get"]:
        out["gets before the getter's first move"] = c["gets", True] / kinds["get"]
    out["people named"] = statistics.fmean(people)
    if task != "qa1":
        out["objects named"] = statistics.fmean(objects)
    out["questions answerable"] = statistics.fmean(answerable)
    if task == "qa3":
        out["asked about a room it has left"] = c["qa3", False] / len(lengths)
    if task == "qa5":
        out["asked about a give before the latest"] = c["qa5 later give", True] / len(lengths)
        out["asked give not the last fact"] = sum(n > 0 for n in after_give) / len(lengths)
        out.update(_quantiles("facts after the asked give", after_give))
        for k, (form, _) in enumerate(QA5_FORMS):
            out[f'form "{form}"'] = _share(forms, k)
    for label in babi.LABELS[task]:
        out[f"answer {label}"] = _share(answers, label)
    return out


def table(task: str, n: int, seed: int = 0) -> str:
    real = stats(task, real_samples(task))
    generated = stats(task, generated_samples(task, n, seed))
    width = max(map(len, real | generated))
    lines = [f"{task}", f"{'':{width}}  {'bAbI':>8}  {'generated':>9}"]
    for key in real | generated:
        r, g = real.get(key, float("nan")), generated.get(key, float("nan"))
        fmt = ".0f" if key == "samples" else ".3f"
        lines.append(f"{key:{width}}  {r:>8{fmt}}  {g:>9{fmt}}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="generated samples per task")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", default=",".join(babi.TASKS))
    args = ap.parse_args(argv)
    print("\n\n".join(table(t, args.n, args.seed) for t in args.tasks.split(",")))


if __name__ == "__main__":
    main()
