"""Shared fixtures: a tiny randomly initialised ARMT with its own tiny tokenizer (never shipped)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longqa.checkpoint import save_model_dir
from longqa.lab.generate.tokenizer import train_tokenizer
from longqa.model import ARMTConfig, ARMTModel

NAMES = ["Mary", "John", "Daniel", "Sandra"]
ROOMS = ["kitchen", "garden", "office", "hallway", "bedroom", "bathroom"]


def babi_text(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(f"{rng.choice(NAMES)} went to the {rng.choice(ROOMS)}." for _ in range(n))


def torchrun(*args: str | Path, ranks: int = 2) -> subprocess.CompletedProcess:
    """`longqa ARGS` under torchrun on CPU (gloo), one thread per rank so the ranks share two cores."""
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks), "-m", "longqa", *map(str, args)],
        capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=240,
    )


def make_tiny_model(path: Path, seed: int = 0, segment_len: int = 16) -> Path:
    tok = train_tokenizer([babi_text(300, seed), "Where is Mary? The quick brown fox jumps over the lazy dog. é ü 日本"], 400)
    torch.manual_seed(seed)
    cfg = ARMTConfig(
        vocab_size=tok.get_vocab_size(), d_model=32, n_layers=2, n_heads=2, d_ff=64,
        segment_len=segment_len, n_mem=4, d_mem=8, max_answer_tokens=4,
    )
    model = ARMTModel(cfg)
    with torch.no_grad():  # a memory that actually writes, so the state tests mean something
        for head in model.mem_heads:
            head.W_V.weight.normal_(std=0.5)
            head.read_norm.weight.fill_(1.0)
    save_model_dir(model, tok, path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("other-model"), seed=1)
