"""Model directories validated before anything is allocated (issue #33, 6): sane config values, heads that
divide the width, a parameter count that fits this machine, a model.safetensors whose header describes
tensors inside the file. Each refusal is one InputError line, found without importing torch."""

from __future__ import annotations

import json
import pickle
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from longqa.checkpoint import check_model_dir, parameter_estimate
from longqa.errors import InputError


@pytest.fixture
def model_copy(tiny_model: Path, tmp_path: Path) -> Path:
    d = tmp_path / "model"
    shutil.copytree(tiny_model, d)
    return d


def set_config(d: Path, **changes) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


def test_the_tiny_and_the_shipped_model_pass(tiny_model: Path) -> None:
    assert check_model_dir(tiny_model)["n_layers"] == 2
    shipped = Path(__file__).resolve().parent.parent / "weights" / "longqa-armt-small"
    cfg = check_model_dir(shipped)
    assert parameter_estimate(cfg) == 6_632_965


@pytest.mark.parametrize("cfg", [{}, {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "segment_len": 16, "n_mem": 4, "d_mem": 8}])
def test_the_estimate_counts_the_model_that_the_config_builds(cfg: dict) -> None:
    """Without torch, the check counts the parameters ARMTModel would build; {} is ARMTConfig's defaults."""
    from dataclasses import asdict

    from longqa.checkpoint import SHAPE_DEFAULTS
    from longqa.model import ARMTConfig, ARMTModel

    defaults = asdict(ARMTConfig())
    assert SHAPE_DEFAULTS == {k: defaults[k] for k in SHAPE_DEFAULTS}
    real = sum(p.numel() for p in ARMTModel(ARMTConfig(**cfg)).parameters())
    assert parameter_estimate(cfg) == real


HOSTILE = [
    ({"n_layers": 100000}, "n_layers is 100000"),
    ({"d_ff": 4194304}, "d_ff is 4194304"),
    ({"n_heads": 0}, "n_heads is 0"),
    ({"n_heads": 3}, "d_model 32 is not a multiple of n_heads 3"),
    ({"d_model": -32}, "d_model is -32"),
    ({"n_layers": True}, "n_layers is True"),
    ({"n_layers": "2"}, "n_layers is '2'"),
    ({"segment_len": 2.5}, "segment_len is 2.5"),
    ({"norm_eps": float("nan")}, "norm_eps is nan"),
    ({"mem_eps": 0}, "mem_eps is 0"),
    ({"eos_token_id": 10**6}, "eos_token_id is 1000000"),
    # Within every range, but the parameters alone would take hundreds of GB: refused by the estimate.
    ({"n_layers": 4000, "d_model": 8192, "n_heads": 8, "d_ff": 32768}, "this model needs about"),
]


@pytest.mark.parametrize("changes, words", HOSTILE, ids=[str(h[0])[:40] for h in HOSTILE])
def test_hostile_configs_are_refused_before_allocation(model_copy: Path, changes: dict, words: str) -> None:
    set_config(model_copy, **changes)
    with pytest.raises(InputError) as e:
        check_model_dir(model_copy)
    assert words in str(e.value) and len(str(e.value).splitlines()) == 1


@pytest.mark.parametrize(
    "name, data, words",
    [
        ("config.json", b"{not json", "config.json is not valid JSON"),
        ("config.json", b"[1, 2]", "config.json is not a JSON object"),
        ("config.json", b" " * (2 << 20), "larger than any model config"),
        ("model.safetensors", pickle.dumps({"weights": [1, 2, 3]}), "not a safetensors file"),
        ("model.safetensors", struct.pack("<Q", 1 << 60) + b"{}", "not a safetensors file"),
        ("model.safetensors", struct.pack("<Q", 10) + b"{not json}", "damaged header"),
    ],
    ids=["config-not-json", "config-list", "config-huge", "weights-pickle", "weights-huge-header", "weights-bad-header"],
)
def test_damaged_files_are_refused(model_copy: Path, name: str, data: bytes, words: str) -> None:
    (model_copy / name).write_bytes(data)
    with pytest.raises(InputError, match=words):
        check_model_dir(model_copy)


def test_truncated_weights_are_refused_before_loading(model_copy: Path) -> None:
    data = (model_copy / "model.safetensors").read_bytes()
    (model_copy / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="damaged or truncated"):
        check_model_dir(model_copy)


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(model_copy: Path) -> None:
    from longqa.checkpoint import load_model_dir

    vocab = json.loads((model_copy / "config.json").read_text())["vocab_size"]
    set_config(model_copy, vocab_size=vocab - 10)  # weights now mismatch too: whichever is found first
    with pytest.raises(InputError, match="cannot load model|tokenizer.json has"):
        load_model_dir(model_copy)


def test_refusing_a_hostile_model_needs_no_torch(model_copy: Path) -> None:
    set_config(model_copy, n_layers=100000)
    code = ("import sys; from longqa.checkpoint import check_model_dir\n"
            "try:\n    check_model_dir(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__, 'torch' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code, str(model_copy)], capture_output=True, text=True, timeout=60)
    assert p.stdout.split() == ["InputError", "False"], p.stderr
