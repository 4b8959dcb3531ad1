"""What the wrong answers of an `eval --json` were: per cell, how many named a label of the story's facts
(one the question does not name), a label from outside the story, or no label. The documents are drawn again
from the eval's seed, so give the --batch and --noise the eval ran with. Usage:
  python training/wrong_answers.py EVAL_JSON --batch 200 --noise FILE [--noise FILE ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from tokenizers import Tokenizer

from longqa import babi
from longqa.evaluate import draw_documents, mentioned_labels
from longqa.haystack import NoiseBank

ROOT = Path(__file__).resolve().parents[1]


def kind(task: str, sample: babi.Sample, answer: str) -> str:
    found = babi.answer_labels(task, sample.question, answer)
    if not found:
        return "no label"
    in_story = {label.lower() for label in mentioned_labels(task, sample.facts, sample.question)}
    return "in the facts" if found <= in_story else "not in the story"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("eval_json")
    ap.add_argument("--batch", type=int, required=True, help="the eval's --batch (the documents depend on it)")
    ap.add_argument("--noise", action="append", required=True)
    ap.add_argument("--tokenizer", default=str(ROOT / "weights" / "longqa-armt-small" / "tokenizer.json"))
    args = ap.parse_args()
    result = json.loads(Path(args.eval_json).read_text())
    tok = Tokenizer.from_file(args.tokenizer)
    bank = NoiseBank(args.noise, tok)
    print("| task | length | wrong | in the facts | not in the story | no label |")
    print("|---|---|---|---|---|---|")
    for cell in result["cells"]:
        task, docs = cell["task"], cell["documents"]
        samples = [s for batch, _ in draw_documents(bank, tok, task, cell["length"], cell["n"], result["seed"], args.batch)
                   for s in batch]
        if [s.question for s in samples] != [d["question"] for d in docs]:
            sys.exit(f"{task} {cell['length']}: these are not the eval's documents (another --batch or --noise?)")
        kinds = Counter(kind(task, s, d["answer"]) for s, d in zip(samples, docs) if not d["correct"])
        print(f"| {task} | {cell['length']} | {sum(kinds.values())} | {kinds['in the facts']} | "
              f"{kinds['not in the story']} | {kinds['no label']} |")


if __name__ == "__main__":
    main()
