"""Model directories: the one place a model and its tokenizer are loaded from and saved to a folder.

A model directory holds config.json, model.safetensors and tokenizer.json (MODEL_FILES). Its fingerprint
names the exact model and tokenizer, so that a memory file written by one is refused by any other.

A directory is checked before anything is allocated (check_model_dir, no torch needed): config.json's
values must be sane (positive sizes, heads that divide the width, bounded sizes), the parameters that its
shape implies must fit the memory this machine has, and model.safetensors' header must describe tensors
that lie inside the file. A hostile or mistaken config is refused in a fraction of a second with one line,
instead of growing to gigabytes or dividing by zero.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from longqa.errors import InputError, printable, show

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from longqa.model import ARMTModel

MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")
DEFAULT_MODEL = "longqa-armt-small"

# config.json: (smallest, largest) of the sizes a model can have. Generous: a model far larger than the
# shipped one passes; what fails is a value no model has (0, negative, a typo of many digits).
INT_RANGES: dict[str, tuple[int, int]] = {
    "vocab_size": (3, 1 << 24),
    "d_model": (1, 1 << 16),
    "n_layers": (1, 1 << 12),
    "n_heads": (1, 1 << 12),
    "d_ff": (1, 1 << 20),
    "segment_len": (1, 1 << 20),
    "n_mem": (0, 1 << 16),
    "d_mem": (1, 1 << 16),
    "conv_width": (1, 1 << 12),
    "max_answer_tokens": (1, 1 << 12),
    "armt_version": (0, 1 << 20),
}
TOKEN_IDS = ("pad_token_id", "gen_token_id", "eos_token_id")
POSITIVE_SMALL_FLOATS = ("norm_eps", "mem_eps")
_MAX_CONFIG_BYTES = 1 << 20
_MAX_ST_HEADER = 100_000_000  # safetensors' own limit
_ST_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def fingerprint(model_dir: str | Path) -> str:
    """Identity of a model + tokenizer: states written by one are refused by any other."""
    h = hashlib.sha256()
    for name in MODEL_FILES:
        with open(Path(model_dir) / name, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()[:16]


# ---- checks before allocation -------------------------------------------------------------------


def _int(value: object) -> bool:
    return type(value) is int


def _val(value: object) -> str:
    """A config value as a message shows it: its JSON-ish repr, short."""
    text = printable(repr(value))
    return text if len(text) <= 30 else text[:30] + "..."


def validate_config(cfg: dict, where: str = "config.json") -> None:
    """InputError unless the config's values are sane; keys it does not know are left to ARMTConfig."""
    for key, (lo, hi) in INT_RANGES.items():
        if key in cfg and not (_int(cfg[key]) and lo <= cfg[key] <= hi):
            raise InputError(f"{where}: {key} is {_val(cfg[key])}; it must be a whole number from {lo} to {hi:,}")
    for key in TOKEN_IDS:
        if key in cfg and not (_int(cfg[key]) and 0 <= cfg[key] < cfg.get("vocab_size", 1 << 24)):
            raise InputError(f"{where}: {key} is {_val(cfg[key])}; it must be a token id below vocab_size")
    for key in POSITIVE_SMALL_FLOATS:
        v = cfg.get(key, 1e-6)
        if not (type(v) in (int, float) and math.isfinite(v) and 0 < v < 1):
            raise InputError(f"{where}: {key} is {_val(v)}; it must be a number between 0 and 1")
    d, heads = cfg.get("d_model"), cfg.get("n_heads")
    if _int(d) and _int(heads) and d % heads:
        raise InputError(f"{where}: d_model {d} is not a multiple of n_heads {heads}")
    for key, value in cfg.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"{where}: {key} is {value}")


# ARMTConfig's defaults, which a key missing from config.json takes (kept equal by tests/test_model_dir.py:
# longqa.model imports torch, which these checks must not).
SHAPE_DEFAULTS = {"vocab_size": 4096, "d_model": 256, "n_layers": 5, "d_ff": 768, "segment_len": 512, "n_mem": 16, "d_mem": 128, "conv_width": 8}


def _shape(cfg: dict) -> dict[str, int]:
    return {k: cfg[k] if _int(cfg.get(k)) else default for k, default in SHAPE_DEFAULTS.items()}


def parameter_estimate(cfg: dict) -> int:
    """The parameters a config describes, as ARMTModel builds them: the embedding (tied head), the causal conv,
    positions, memory tokens and the final norm, and per layer attention, the gated feed-forward, two norms
    and the memory head (W_Q, W_K, W_V, beta, read norm)."""
    c = _shape(cfg)
    d, d_mem, d_ff = c["d_model"], c["d_mem"], c["d_ff"]
    per_layer = 4 * d * d + 3 * d * d_ff + 2 * d * d_mem + d * d + 4 * d + 1
    outer = c["vocab_size"] * d + c["conv_width"] * d * d + d + (c["segment_len"] + 2 * c["n_mem"]) * d + d
    return outer + c["n_layers"] * per_layer


def state_floats(cfg: dict) -> int:
    """Floats of one document's memory (A and z): n_layers x 6 d_mem x (d_model + 1)."""
    c = _shape(cfg)
    return c["n_layers"] * 6 * c["d_mem"] * (c["d_model"] + 1)


def available_memory() -> int | None:
    """Bytes this process could still allocate: the smaller of the memory the kernel says is available and
    what the address-space limit (ulimit -v) leaves; None if neither can be read."""
    limits = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError):
            pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(soft)
    return min(limits) if limits else None


def _gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB"


def check_model_dir(model_dir: str | Path) -> dict:
    """Everything about a model directory that can be checked before torch is loaded and anything is
    allocated; returns its config. InputError (exit 2) with one line saying what is wrong."""
    d = Path(model_dir)
    name = show(d, 200)
    if not d.is_dir():
        raise InputError(f"model directory not found: {name}")
    missing = [n for n in MODEL_FILES if not (d / n).is_file()]
    if missing:
        raise InputError(f"{name} is not a longqa model directory (missing {', '.join(missing)})")
    try:
        raw = (d / "config.json").read_bytes()[: _MAX_CONFIG_BYTES + 1]
        if len(raw) > _MAX_CONFIG_BYTES:
            raise InputError(f"{name}: config.json is larger than any model config ({_MAX_CONFIG_BYTES:,} bytes)")
        cfg = json.loads(raw)
    except OSError as e:
        raise InputError(f"cannot read {name}/config.json: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise InputError(f"{name}: config.json is not valid JSON ({str(e)[:80]})") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{name}: config.json is not a JSON object")
    validate_config(cfg, show(d / "config.json", 200))
    weights_bytes = _check_safetensors(d / "model.safetensors", name)
    need = 4 * parameter_estimate(cfg) + 8 * state_floats(cfg)
    have = available_memory()
    if have is not None and max(need, weights_bytes) > have:
        raise InputError(
            f"{name}: this model needs about {_gb(max(need, weights_bytes))} of memory and this machine has "
            f"{_gb(have)} available (config.json: n_layers {cfg.get('n_layers')}, d_model {cfg.get('d_model')}, d_ff {cfg.get('d_ff')})"
        )
    return cfg


def _check_safetensors(path: Path, name: str) -> int:
    """Bytes of tensor data, after checking that the header parses and describes tensors inside the file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
            if not 2 <= n <= min(_MAX_ST_HEADER, size - 8):
                raise InputError(f"{name}: model.safetensors is not a safetensors file")
            header = json.loads(f.read(n))
    except OSError as e:
        raise InputError(f"cannot read {name}/model.safetensors: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InputError(f"{name}: model.safetensors has a damaged header") from None
    if not isinstance(header, dict):
        raise InputError(f"{name}: model.safetensors has a damaged header")
    data = size - 8 - n
    total = 0
    for key, t in header.items():
        if key == "__metadata__":
            continue
        ok = isinstance(t, dict) and t.get("dtype") in _ST_DTYPES and isinstance(t.get("shape"), list)
        ok = ok and all(_int(s) and s >= 0 for s in t["shape"]) and isinstance(t.get("data_offsets"), list)
        ok = ok and len(t["data_offsets"]) == 2 and all(_int(o) for o in t["data_offsets"])
        if ok:
            start, end = t["data_offsets"]
            ok = 0 <= start <= end <= data and end - start == math.prod(t["shape"]) * _ST_DTYPES[t["dtype"]]
        if not ok:
            raise InputError(f"{name}: model.safetensors is damaged or truncated (tensor {show(key, 40)})")
        total += end - start
    return total


# ---- loading ------------------------------------------------------------------------------------


def _config_types(cfg: dict, name: str) -> None:
    """Every value of a key that is one of ARMTConfig's fields has that field's type (a bool is no int, a
    string no number). Keys that are not fields are left to ARMTConfig.from_pretrained, which knows which it
    ignores (those transformers writes) and refuses the rest."""
    import dataclasses

    from longqa import model

    fields = {f.name: str(f.type) for f in dataclasses.fields(model.ARMTConfig)}
    for key, value in cfg.items():
        if key not in fields:
            continue
        kind = fields[key].replace(" ", "")
        ok = {
            "int": _int(value),
            "bool": type(value) is bool,
            "float": type(value) in (int, float),
            "str": isinstance(value, str),
        }.get(kind.removesuffix("|None"), True)
        if kind.endswith("|None") and value is None:
            ok = True
        if not ok:
            raise InputError(f"cannot load model from {name}: config.json's {key} is {_val(value)}, not {fields[key]}")


def load_model_dir(model_dir: str | Path) -> tuple[ARMTModel, Tokenizer]:
    """Model and tokenizer from a directory written by save_model_dir; InputError if it is not one."""
    from longqa.input.text import EOS, GEN, PAD, load_tokenizer
    from longqa.model import ARMTModel

    d = Path(model_dir)
    name = show(d, 200)
    cfg = check_model_dir(d)
    _config_types(cfg, name)
    try:
        model = ARMTModel.from_pretrained(d)
        tokenizer = load_tokenizer(d / "tokenizer.json")
    except Exception as e:  # json/safetensors/torch/tokenizers each raise their own types
        why = " ".join(str(e).split())
        raise InputError(f"cannot load model from {name}: {why[:200] + ('...' if len(why) > 200 else '') if why else type(e).__name__}") from None
    c = model.config
    if tokenizer.get_vocab_size() > c.vocab_size:
        raise InputError(f"{name}: tokenizer.json has {tokenizer.get_vocab_size():,} tokens, the model only {c.vocab_size:,}")
    for token, key in ((PAD, "pad_token_id"), (GEN, "gen_token_id"), (EOS, "eos_token_id")):
        if hasattr(c, key) and tokenizer.token_to_id(token) != getattr(c, key):
            raise InputError(f"{name}: tokenizer.json's {token} is id {tokenizer.token_to_id(token)}, config.json's {key} is {getattr(c, key)}")
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
        raise InputError(f"LONGQA_MODEL={show(env, 200)} is not a model directory; fix or unset it, or pass --model DIR")
    return Path(env)
