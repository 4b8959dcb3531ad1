"""Per stage of a training config: the share of the supervised answer tokens that are final answers (the
ones that must come through memory, as in `ask`) against inline answers of dense streams. Without
Stage.final_weight, that share is the final answers' weight in the loss. Draws examples as the trainer does.
Usage: python training/answer_share.py CONFIG [--rows 64] [--seed 0]
"""

from __future__ import annotations

import argparse
import random

from tokenizers import Tokenizer

from longqa.model import ARMTConfig
from longqa.train import IGNORE, ExampleMaker, TrainConfig, noise_bank


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--rows", type=int, default=64, help="examples drawn per stage")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = TrainConfig.from_json(args.config)
    tok = Tokenizer.from_file(cfg.tokenizer)
    # a run from `init` keeps that model's shape (TrainConfig), so its segment length is there
    segment_len = ARMTConfig.from_pretrained(cfg.init).segment_len if cfg.init else ARMTConfig(**cfg.model).segment_len
    maker = ExampleMaker(tok, noise_bank(tuple(cfg.noise), cfg.tokenizer), segment_len, cfg.noise_share)
    rng = random.Random(args.seed)
    print("| stage | segments | dense share | final answers' share of answer tokens |")
    print("|---|---|---|---|")
    for i, stage in enumerate(cfg.stages, 1):
        inline = final = 0
        for _ in range(args.rows):
            e = maker.example(rng, stage, rng.randint(1, stage.max_segments))
            inline += sum(label != IGNORE for label in e["labels"])
            final += sum(label != IGNORE for labels in e["q_labels"] for label in labels)
        print(f"| {i} | {stage.max_segments} | {stage.dense} | {100 * final / (inline + final):.1f} % |")


if __name__ == "__main__":
    main()
