"""Where a checkpoint loses bAbI answers: reasoning over the facts, or carrying them through memory.

For each task, stories without noise that fit one segment with their question are answered twice:
- inline: facts, question and GEN in one context segment, the answer read off that segment's outputs
  (attention over the facts; the memory is empty);
- from memory: the facts in one segment that writes memory, the question in a read-only final segment,
  exactly as `longqa ask` does.
Exact match of every answer token and EOS (teacher-forced), greedy. Usage:
  python training/inline_vs_memory.py [-m weights/longqa-armt-small] [-n 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random

import torch

from longqa import babi
from longqa.engine import load_checkpoint
from longqa.text import encode_sentences
from longqa.train import IGNORE, ExampleMaker, collate, rows_exact


def exact(model, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    sel = labels != IGNORE
    return rows_exact(model.logits(h[sel]).argmax(-1) == labels[sel], sel)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default="weights/longqa-armt-small")
    ap.add_argument("-n", type=int, default=200, help="stories per task")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--json", help="write the table here")
    args = ap.parse_args()
    model, tok = load_checkpoint(args.model)
    S = model.config.segment_len
    qa = ExampleMaker(tok, None, S, 0.0).qa  # the trainer's question GEN answer EOS encoding
    out = {"model": args.model, "n": args.n, "seed": args.seed, "tasks": {}}
    for task in babi.TASKS:
        rng = random.Random(args.seed)
        mem_ex, inline_ex, skipped = [], [], 0
        while len(mem_ex) < args.n:
            s = babi.generate(task, rng)
            facts = [t for f in encode_sentences(tok, s.facts) for t in f]
            q_ids, q_labels = qa(s.question, s.answer)
            if len(facts) + len(q_ids) > S:
                skipped += 1
                continue
            mem_ex.append({"ids": facts, "labels": [IGNORE] * len(facts), "q_ids": [q_ids], "q_labels": [q_labels], "task": task})
            inline_ex.append({**mem_ex[-1], "ids": facts + q_ids, "labels": [IGNORE] * len(facts) + q_labels})
        with torch.inference_mode():
            b = collate(mem_ex, S, model.config.pad_token_id)
            _, state = model.read_segment(b["ids"], model.new_state(args.n), b["lengths"])
            from_memory = exact(model, model.read_only(b["q_ids"], state, b["q_lengths"]), b["q_labels"])
            b = collate(inline_ex, S, model.config.pad_token_id)
            h, _ = model.read_segment(b["ids"], model.new_state(args.n), b["lengths"])
            inline = exact(model, h, b["labels"])
        row = {"inline": round(100 * inline.float().mean().item(), 1),
               "from_memory": round(100 * from_memory.float().mean().item(), 1),
               "stories_too_long_skipped": skipped}
        out["tasks"][task] = row
        print(f"{task}: inline {row['inline']:5.1f}  from memory {row['from_memory']:5.1f}  ({skipped} longer stories skipped)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
