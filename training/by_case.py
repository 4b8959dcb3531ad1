"""What qa2_cases.py and qa4_cases.py share: their command line, and `longqa eval`'s documents of one task
(evaluate_cell, so the same documents and answers as the eval) paired with the stories they were built from."""

from __future__ import annotations

import argparse
from pathlib import Path

from longqa import babi
from longqa.engine import Engine
from longqa.evaluate import draw_documents, evaluate_cell
from longqa.haystack import Haystack, NoiseBank, parse_length

ROOT = Path(__file__).resolve().parents[1]


def documents(task: str, default_n: int) -> tuple[argparse.Namespace, list[tuple[babi.Sample, dict, Haystack]]]:
    """The command line (with the model's segment_len added), and each document's story, eval answer and haystack."""
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", default=str(ROOT / "weights" / "longqa-armt-small"))
    ap.add_argument("--length", default="0", help="context tokens, as longqa eval --lengths takes them")
    ap.add_argument("-n", type=int, default=default_n)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--hints", type=float, default=0.0, help="ask a curriculum's hinted stories (babi.Wording.hints)")
    ap.add_argument("--noise", action="append", help="noise files (default: the held-out ones in .data/carry/noise)")
    args = ap.parse_args()
    noise = args.noise or [str(ROOT / ".data/carry/noise" / f) for f in ("fortunes.txt.xz", "perldoc.txt.xz")]
    engine = Engine(args.model, device=args.device)
    bank = NoiseBank(noise, engine.tokenizer)
    length = parse_length(args.length)
    wording = babi.Wording(hints=args.hints)
    cell = evaluate_cell(engine, bank, task, length, args.n, args.seed, args.batch, wording=wording)
    batches = list(draw_documents(bank, engine.tokenizer, task, length, args.n, args.seed, args.batch, wording))
    args.segment_len = engine.config.segment_len
    samples = (s for batch, _ in batches for s in batch)
    return args, list(zip(samples, cell.documents, (h for _, hays in batches for h in hays)))


def print_table(title: str, right: dict[str, list[bool]]) -> None:
    print(f"| {title} | documents | right |")
    print("|---|---|---|")
    for c, r in right.items():
        print(f"| {c} | {len(r)} | {100 * sum(r) / max(len(r), 1):.1f} % |")
