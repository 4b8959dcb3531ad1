"""Model directories: the one place a model and its tokenizer are loaded from and saved to a folder.

A model directory holds config.json, model.safetensors and tokenizer.json (MODEL_FILES). Its fingerprint
names the exact model and tokenizer, so that a memory file written by one is refused by any other.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tokenizers import Tokenizer

from longqa.errors import InputError
from longqa.input.text import load_tokenizer
from longqa.model import ARMTModel

MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")
DEFAULT_MODEL = "longqa-armt-small"


def fingerprint(model_dir: str | Path) -> str:
    """Identity of a model + tokenizer: states written by one are refused by any other."""
    h = hashlib.sha256()
    for name in MODEL_FILES:
        with open(Path(model_dir) / name, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()[:16]


def load_model_dir(model_dir: str | Path) -> tuple[ARMTModel, Tokenizer]:
    """Model and tokenizer from a directory written by save_model_dir; InputError if it is not one."""
    d = Path(model_dir)
    if not d.is_dir():
        raise InputError(f"model directory not found: {d}")
    missing = [n for n in MODEL_FILES if not (d / n).is_file()]
    if missing:
        raise InputError(f"{d} is not a longqa model directory (missing {', '.join(missing)})")
    try:
        model = ARMTModel.from_pretrained(d)
        tokenizer = load_tokenizer(d / "tokenizer.json")
    except Exception as e:  # json/safetensors/torch/tokenizers each raise their own types
        raise InputError(f"cannot load model from {d}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return model, tokenizer


def save_model_dir(model: ARMTModel, tokenizer: Tokenizer, model_dir: str | Path) -> None:
    model.save_pretrained(model_dir)
    tokenizer.save(str(Path(model_dir) / "tokenizer.json"))


def default_model_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "weights" / DEFAULT_MODEL, here.parent / "weights" / DEFAULT_MODEL):
        if candidate.is_dir():
            return candidate
    raise InputError(
        f"no model: the default checkpoint weights/{DEFAULT_MODEL} is not installed; pass --model DIR or set LONGQA_MODEL"
    )


def resolve_model_dir(option: str | None) -> Path:
    """The model directory to use: --model, else $LONGQA_MODEL, else the shipped checkpoint."""
    if option:
        return Path(option)
    env = os.environ.get("LONGQA_MODEL")
    if not env:
        return default_model_dir()
    if not Path(env).is_dir():
        # Say where the path came from: the user may not remember having set the variable.
        raise InputError(f"LONGQA_MODEL={env} is not a model directory; fix or unset it, or pass --model DIR")
    return Path(env)
