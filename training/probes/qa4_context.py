"""Probe: does QA4's middle room (facts worded one way, "What is D of the R?") become learnable inline, and
what in the trainer's rows keeps it from being learned? Fine-tunes a checkpoint on rows of K earlier QA4
stories (each with its question and answer, as a dense stream has them) followed by the target story and its
question; the loss is on every answer. Prints the target question's accuracy on held-out rows as it trains.
  PYTHONPATH=. python training/probes/qa4_context.py MODEL --context K [--segment] [--steps 300] [--mid 0.5] [--seed 0]
--segment reads each row as a padded 512-token context segment with memory tokens (the trainer's inline path)
instead of a short read-only sequence."""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

from longqa import babi
from longqa.engine import load_checkpoint
from longqa.text import encode_sentences
from longqa.train import IGNORE, ExampleMaker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from qa4_cases import CASES, case  # noqa: E402

EASY = babi.Wording(qa4_inverse=0.0, qa4_relative=False)
Row = tuple[list[int], list[int]]


class Probe:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dev = "cuda" if torch.cuda.is_available() else "cpu"
        torch.manual_seed(args.seed)
        self.model, self.tok = load_checkpoint(args.model)
        self.model.to(self.dev).train()
        self.qa = ExampleMaker(self.tok, None, 512, 0.0).qa

    def story(self, rng: random.Random, mid: float) -> Row:
        """One easy-wording story and one of its questions: about the middle room with chance `mid`."""
        facts = babi._qa4_story(rng, EASY)
        want = CASES[rng.random() < mid]
        qs = [(q, a) for q, a in babi._qa4_questions(facts, EASY) if case(babi.Sample("qa4", facts, q, a)) == want]
        ids = [t for f in encode_sentences(self.tok, facts) for t in f]
        q, la = self.qa(*rng.choice(qs))
        return ids + q, [IGNORE] * len(ids) + la

    def row(self, rng: random.Random, mid: float, target_only: bool) -> Row:
        ids: list[int] = []
        labels: list[int] = []
        for _ in range(self.args.context):
            i, la = self.story(rng, 0.5)
            ids += i
            labels += [IGNORE] * len(la) if target_only else la
        i, la = self.story(rng, mid)
        return ids + i, labels + la

    def batch(self, rows: list[Row]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        T = self.model.config.segment_len if self.args.segment else max(len(i) for i, _ in rows)
        ids = torch.full((len(rows), T), self.model.config.pad_token_id)
        lab = torch.full((len(rows), T), IGNORE)
        for k, (i, la) in enumerate(rows):
            ids[k, : len(i)], lab[k, : len(la)] = torch.tensor(i), torch.tensor(la)
        return ids.to(self.dev), lab.to(self.dev), torch.tensor([len(i) for i, _ in rows], device=self.dev)

    def run(self, ids: torch.Tensor, lab: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        with torch.autocast(self.dev, torch.bfloat16, enabled=self.dev == "cuda"):
            state = m.new_state(ids.shape[0], self.dev)
            h = m.read_segment(ids, state, lengths)[0] if self.args.segment else m.read_only(ids, state, lengths)
        sel = lab != IGNORE
        logits = m.logits(h[sel])
        return torch.nn.functional.cross_entropy(logits, lab[sel]), logits.argmax(-1) == lab[sel]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--context", type=int, default=0)
    ap.add_argument("--segment", action="store_true")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--mid", type=float, default=0.5, help="share of training questions about the middle room")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    p = Probe(args)
    test = p.batch([p.row(random.Random(1000 + k), 1.0, True) for k in range(400)])  # middle-room targets only

    def middle_accuracy() -> float:
        with torch.no_grad():
            hits = p.run(*test)[1].view(400, -1)  # answer token, EOS
            return round(100 * hits.all(1).float().mean().item(), 1)

    opt = torch.optim.AdamW(p.model.parameters(), lr=args.lr, weight_decay=0.01)
    rng = random.Random(args.seed + 1)
    t0 = time.time()
    print(f"context {args.context} segment {args.segment} mid {args.mid} seed {args.seed}: step 0 middle {middle_accuracy()}", flush=True)
    for step in range(1, args.steps + 1):
        loss, _ = p.run(*p.batch([p.row(rng, args.mid, False) for _ in range(64)]))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(p.model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            print(f"context {args.context} segment {args.segment}: step {step} loss {loss.item():.3f} middle {middle_accuracy()} {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
