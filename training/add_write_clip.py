"""Give a trained checkpoint a write clip (ARMTConfig.write_clip): per layer, the largest RMS of the vectors
its memory tokens wrote while reading BABILong haystacks of the training noise. Vectors longer than that are
then scaled down to it, so what the checkpoint did on such text is unchanged, while a memory that starts to
feed its own reads back into its writes (armt-v3 at ~950 segments) cannot run away. Usage:
  python training/add_write_clip.py SRC DST --noise FILE [--noise FILE ...] [-n 16] [--length 16K]
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

import numpy as np
import torch

from longqa import babi
from longqa.engine import load_checkpoint, save_checkpoint
from longqa.haystack import NoiseBank, build, parse_length
from longqa.model import ARMTModel
from memory_age import watch_writes  # training/ is on sys.path when a script here runs


@torch.inference_mode()
def write_rms_max(model: ARMTModel, contexts: list[np.ndarray]) -> list[float]:
    """Per layer, the largest RMS of a memory-token vector written while reading the contexts."""
    top = watch_writes(model)
    S = model.config.segment_len
    for ids in contexts:
        state = model.new_state(1)
        for start in range(0, len(ids) - S + 1, S):  # full segments only: no padding in the statistics
            state = model.read(torch.as_tensor(ids[start : start + S], dtype=torch.long)[None], state)
    return top


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--noise", action="append", required=True, help="training noise (never the held-out files)")
    ap.add_argument("-n", type=int, default=16, help="haystacks, spread over the tasks")
    ap.add_argument("--length", default="16K")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model, tok = load_checkpoint(args.src)
    if model.config.write_clip is not None:
        raise SystemExit(f"{args.src} has a write clip already")
    rng = random.Random(args.seed)
    bank = NoiseBank(args.noise, tok)
    target = parse_length(args.length)
    contexts = [
        build(babi.generate(babi.TASKS[i % len(babi.TASKS)], rng), bank, tok, target, rng, keep_sentences=False).context_ids
        for i in range(args.n)
    ]
    clip = [float(math.ceil(x)) for x in write_rms_max(model, contexts)]  # up: the largest stays unclipped
    print("write clip per layer:", clip)
    model.config.write_clip = clip
    save_checkpoint(model, tok, Path(args.dst))
    print(f"wrote {args.dst}")


if __name__ == "__main__":
    main()
