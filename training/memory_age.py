"""How a checkpoint's memory ages over one long document: every N segments, per layer, the largest RMS of the
vectors the memory tokens wrote in those segments, the largest |A| and the mean of the normaliser z; at the
end, the answer.

A memory that feeds its reads back into its writes shows here as a write RMS that creeps above anything
seen in training and then runs away (armt-v3: inf at about segment 990 of a 1M haystack). Reads segment
by segment, without graphs, so that every write can be watched; CPU is fine. Usage:
  python training/memory_age.py MODEL FILE QUESTION [--every 100] [--json out.jsonl]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from longqa.engine import Engine
from longqa.model import ARMTModel
from longqa.reader import documents


def watch_writes(model: ARMTModel) -> list[float]:
    """Per layer, the largest RMS of a memory-token vector written since the list was last zeroed (the caller
    zeroes it); NaN once a NaN was written. Shadows each memory's write method on this model only."""
    top = [0.0] * len(model.memory)
    for l, mem in enumerate(model.memory):
        def write(m, A, z, active, *tokens, _l=l, _write=mem.write):
            rms = m.float().pow(2).mean(-1).sqrt().max().cpu()
            top[_l] = float(torch.maximum(torch.tensor(top[_l]), rms))  # torch.maximum keeps NaN, max() would not
            return _write(m, A, z, active, *tokens)
        mem.write = write
    return top


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("file")
    ap.add_argument("question")
    ap.add_argument("--every", type=int, default=100, help="segments per row")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="also write the rows here, one JSON object per line")
    args = ap.parse_args()
    engine = Engine(args.model, device=args.device, use_graphs=False)
    top = watch_writes(engine.model)
    rows: list[dict] = []
    read, segments = engine.model.read, [0]

    def watched(ids: torch.Tensor, state, *rest):
        new = read(ids, state, *rest)
        segments[0] += 1
        if segments[0] % args.every == 0:
            a_max, z_mean = new.A[0].abs().flatten(1).amax(1), new.z[0].mean(-1)
            rows.append({"segment": segments[0], "write_rms_max": [round(x, 1) for x in top],
                         "A_abs_max": [float(f"{x:.3g}") for x in a_max.tolist()],
                         "z_mean": [float(f"{x:.4g}") for x in z_mean.tolist()]})
            print(json.dumps(rows[-1]), flush=True)
            top[:] = [0.0] * len(top)
        return new

    engine.model.read = watched
    memory = engine.new_memory()
    engine.read([memory], [documents(args.file, lambda msg: print(msg, file=sys.stderr))])
    answer = engine.answer([memory], [args.question])[0][0]
    print(json.dumps({"segments": segments[0], "question": args.question, "answer": answer}), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows + [{"question": args.question, "answer": answer}])


if __name__ == "__main__":
    main()
