"""Final-answer training accuracy per task from training logs, averaged over the log rows in step windows,
so that two runs compare at equal steps. Usage:
  python training/log_accuracy.py LOG [LOG ...] --windows 2500-3000,4000-5500
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from longqa.lab.generate.babi import TASKS


def window_means(rows: list[dict], start: int, end: int) -> list[float | None]:
    """Mean exact match per task (None where absent) over the rows with start < step <= end."""
    inside = [r for r in rows if start < r["step"] <= end]
    means = []
    for task in TASKS:
        xs = [r[f"exact_{task}"] for r in inside if f"exact_{task}" in r]
        means.append(sum(xs) / len(xs) if xs else None)
    return means


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("logs", nargs="+")
    ap.add_argument("--windows", required=True, help="START-END,...: rows with START < step <= END")
    args = ap.parse_args()
    windows = [tuple(map(int, w.split("-"))) for w in args.windows.split(",")]
    print("| steps | " + " | ".join(Path(log).stem for log in args.logs) + " |")
    print("|---" * (len(args.logs) + 1) + "|")
    runs = [[json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()] for log in args.logs]
    for start, end in windows:
        cells = [" / ".join("–" if m is None else f"{100 * m:.0f}" for m in window_means(rows, start, end)) for rows in runs]
        print(f"| {start:,}–{end:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
