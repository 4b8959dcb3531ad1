"""Two checkpoints' `eval --json` on the same documents, compared document by document: per length, how many
documents only A got right, how many only B, and a two-sided sign test on those. Evals of the same seed,
batch and noise hold the same documents; the script checks that their questions match. Usage:
  python training/paired.py A_JSON B_JSON
"""

from __future__ import annotations

import argparse
import json
import sys
from math import comb
from pathlib import Path


def sign_test(a: int, b: int) -> float:
    """Two-sided exact sign test: the chance of a split at least this uneven if either side were as likely."""
    n = a + b
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(min(a, b) + 1)) / 2**n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args()
    cells = [{(c["task"], c["length"]): c for c in json.loads(Path(p).read_text())["cells"]} for p in (args.a, args.b)]
    by_length: dict[int, list[int]] = {}
    for key in sorted(cells[0].keys() & cells[1].keys(), key=lambda k: (k[1], k[0])):
        docs_a, docs_b = cells[0][key]["documents"], cells[1][key]["documents"]
        if [d["question"] for d in docs_a] != [d["question"] for d in docs_b]:
            sys.exit(f"{key[0]} {key[1]}: the two evals read different documents")
        row = by_length.setdefault(key[1], [0, 0, 0])
        row[0] += len(docs_a)
        row[1] += sum(x["correct"] and not y["correct"] for x, y in zip(docs_a, docs_b))
        row[2] += sum(y["correct"] and not x["correct"] for x, y in zip(docs_a, docs_b))
    if not by_length:
        sys.exit("the two evals share no task and length")
    print("| length | documents | right only in A | right only in B | sign test p |")
    print("|---|---|---|---|---|")
    for length, (n, a, b) in by_length.items():
        print(f"| {length} | {n} | {a} | {b} | {sign_test(a, b):.2g} |")


if __name__ == "__main__":
    main()
