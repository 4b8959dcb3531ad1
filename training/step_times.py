"""Median seconds per step of a training log, per (max segments, batch per step).

Each logged row averages the steps since the row before; a row that covers a compile or a stall runs to
seconds, and the median leaves such rows out where a mean would not. Usage:
  python training/step_times.py training/logs/armt-v3.jsonl [--from-step N] [--to-step N]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def step_times(rows: list[dict]) -> dict[tuple[int, int | None], list[float]]:
    """sec_per_step of each row, grouped by the stage's shape (old logs have no batch: None)."""
    groups: dict[tuple[int, int | None], list[float]] = defaultdict(list)
    for row in rows:
        groups[(row["max_segments"], row.get("batch"))].append(row["sec_per_step"])
    return groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", type=Path)
    ap.add_argument("--from-step", type=int, default=0)
    ap.add_argument("--to-step", type=int, default=10**12)
    args = ap.parse_args()
    rows = [json.loads(line) for line in args.log.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if args.from_step <= r["step"] <= args.to_step]
    print("| max segments | batch per step | rows | median s per step | examples per s |\n|---|---|---|---|---|")
    for (segments, batch), times in step_times(rows).items():
        median = statistics.median(times)
        rate = f"{batch / median:,.0f}" if batch else "–"
        print(f"| {segments} | {batch if batch else '–'} | {len(times)} | {median:.3f} | {rate} |")


if __name__ == "__main__":
    main()
