"""Probe: does QA4's middle room (facts worded one way, "What is D of the R?") become learnable inline, and
what in the trainer's rows keeps it from being learned? Fine-tunes a checkpoint on rows of K earlier QA4
stories (each with its question and answer, as a dense stream has them) followed by the target story and its
question; the loss is on every answer. Prints the target question's accuracy on held-out rows as it trains.
  python training/probes/qa4_context.py MODEL --context K [--segment] [--steps 300] [--mid 0.5] [--seed 0]
--segment reads each row as a padded 512-token context segment with memory tokens (the trainer's inline path)
instead of a short read-only sequence."""
from __future__ import annotations

import argparse
import random
import time

import torch

from longqa import babi
from longqa.engine import load_checkpoint
from longqa.text import encode_sentences
from longqa.train import IGNORE, ExampleMaker

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--context", type=int, default=0)
ap.add_argument("--segment", action="store_true")
ap.add_argument("--steps", type=int, default=300)
ap.add_argument("--mid", type=float, default=0.5, help="share of training questions about the middle room")
ap.add_argument("--lr", type=float, default=3e-4)
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()
dev = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(args.seed)
model, tok = load_checkpoint(args.model)
model.to(dev).train()
qa = ExampleMaker(tok, None, 512, 0.0).qa
pad, S = model.config.pad_token_id, model.config.segment_len
EASY = babi.QA4Wording(inverse=0.0, relative=False)


def story(rng: random.Random, mid: float) -> tuple[list[int], list[int]]:
    facts = babi._qa4_story(rng, EASY)
    middle = next(r for r in babi.ROOMS if all(f" {r}." in f or f" {r} " in f for f in facts))
    want = rng.random() < mid
    qs = [x for x in babi._qa4_questions(facts, EASY) if (f"the {middle}?" in x[0]) == want]
    ids = [t for f in encode_sentences(tok, facts) for t in f]
    q, la = qa(*rng.choice(qs))
    return ids + q, [IGNORE] * len(ids) + la


def row(rng: random.Random, mid: float, target_only: bool) -> tuple[list[int], list[int]]:
    ids: list[int] = []
    labels: list[int] = []
    for _ in range(args.context):
        i, la = story(rng, 0.5)
        ids += i
        labels += [IGNORE] * len(la) if target_only else la
    i, la = story(rng, mid)
    return ids + i, labels + la


def batch(rows):
    T = S if args.segment else max(len(i) for i, _ in rows)
    ids = torch.full((len(rows), T), pad)
    lab = torch.full((len(rows), T), IGNORE)
    for k, (i, la) in enumerate(rows):
        ids[k, : len(i)], lab[k, : len(la)] = torch.tensor(i), torch.tensor(la)
    return ids.to(dev), lab.to(dev), torch.tensor([len(i) for i, _ in rows], device=dev)


def run(ids, lab, L):
    with torch.autocast(dev, torch.bfloat16, enabled=dev == "cuda"):
        state = model.new_state(ids.shape[0], dev)
        h = model.read_segment(ids, state, L)[0] if args.segment else model.read_only(ids, state, L)
    sel = lab != IGNORE
    logits = model.logits(h[sel])
    return torch.nn.functional.cross_entropy(logits, lab[sel]), logits.argmax(-1) == lab[sel]


test = batch([row(random.Random(1000 + k), 1.0, True) for k in range(400)])  # middle-room targets only


def middle_accuracy() -> float:
    with torch.no_grad():
        hits = run(*test)[1].view(400, -1)  # answer token, EOS
        return round(100 * hits.all(1).float().mean().item(), 1)


opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
rng = random.Random(args.seed + 1)
t0 = time.time()
print(f"context {args.context} segment {args.segment} mid {args.mid} seed {args.seed}: step 0 middle {middle_accuracy()}", flush=True)
for step in range(1, args.steps + 1):
    loss, _ = run(*batch([row(rng, args.mid, False) for _ in range(64)]))
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if step % 50 == 0:
        print(f"context {args.context} segment {args.segment}: step {step} loss {loss.item():.3f} middle {middle_accuracy()} {time.time() - t0:.0f}s", flush=True)
