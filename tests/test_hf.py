"""longqa.hf: the shipped checkpoint through transformers' Auto classes is the native model, and what it saves
longqa still loads. Runs where the `hf` extra (transformers) is installed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

import transformers  # noqa: E402
from packaging.version import Version  # noqa: E402
from transformers import AutoConfig, AutoModel  # noqa: E402

from longqa.checkpoint import load_model_dir  # noqa: E402
from longqa.hf import ARMTHFConfig, ARMTHFModel  # noqa: E402  (the import registers the Auto classes)
from longqa.input.text import decode, encode_text, load_tokenizer, question_ids  # noqa: E402
from longqa.model import HF_CONFIG_KEYS, MODEL_TYPE, ARMTConfig, ARMTModel  # noqa: E402

SHIPPED = Path(__file__).resolve().parent.parent / "weights" / "longqa-armt-small"
# from_pretrained's dtype argument: `dtype` since transformers 4.56, `torch_dtype` before.
DTYPE = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
STORY = "Mary went to the kitchen. John went to the garden. Mary travelled to the office."
QUESTIONS = ["Where is Mary?", "Where is John?"]


@pytest.fixture(scope="module")
def native() -> ARMTModel:
    return ARMTModel.from_pretrained(SHIPPED)


@pytest.fixture(scope="module")
def auto() -> ARMTHFModel:
    return AutoModel.from_pretrained(SHIPPED)


def outputs(model: ARMTModel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Hidden states and memory after STORY as one padded segment, and greedy answers to QUESTIONS from it."""
    tok = load_tokenizer(SHIPPED / "tokenizer.json")
    ids = encode_text(tok, STORY)
    seg = torch.full((1, model.config.segment_len), model.config.pad_token_id)
    seg[0, : len(ids)] = torch.tensor(ids)
    with torch.inference_mode():
        h, memory = model.context_segment(seg, model.new_memory(1), torch.tensor([len(ids)]))
    memory = memory.rows(torch.zeros(len(QUESTIONS), dtype=torch.long))  # one row per question
    answers = model.answer(memory, [question_ids(tok, q) for q in QUESTIONS])
    return h, memory.A, memory.z, [decode(tok, a) for a in answers]


def test_auto_model_is_the_native_model(native: ARMTModel, auto: ARMTHFModel) -> None:
    assert isinstance(auto, ARMTHFModel) and isinstance(auto, ARMTModel)
    assert isinstance(auto.config, ARMTHFConfig) and auto.config.to_armt() == native.config
    assert not auto.training
    # The same names, no renaming, the same values.
    assert list(auto.state_dict()) == list(native.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(auto.state_dict().values(), native.state_dict().values()))
    *tensors, answers = outputs(auto)
    *expected, native_answers = outputs(native)
    assert all(torch.equal(a, b) for a, b in zip(tensors, expected))
    assert answers == native_answers == ["office", "garden"]


def test_dtype_is_fp32_unless_asked(auto: ARMTHFModel) -> None:
    """fp32 by default, like ARMTModel.from_pretrained, though the file is bf16 (transformers 5 would take the
    file's dtype); an explicit dtype wins."""
    assert {p.dtype for p in auto.parameters()} == {torch.float32}
    bf16 = AutoModel.from_pretrained(SHIPPED, **{DTYPE: torch.bfloat16})
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in AutoModel.from_pretrained(SHIPPED, **{DTYPE: "auto"}).parameters()} == {torch.bfloat16}
    # bf16 weights loaded and saved come back bit for bit: the weights file is the shipped one.
    assert torch.equal(bf16.embed.weight.float(), auto.embed.weight)


def test_save_pretrained_stays_a_longqa_model_dir(auto: ARMTHFModel, tmp_path: Path) -> None:
    auto.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert set(saved) <= set(ARMTConfig.field_names()) | HF_CONFIG_KEYS
    assert set(ARMTConfig.field_names()) <= set(saved)  # every field written, defaults too
    assert saved["model_type"] == MODEL_TYPE
    assert ARMTConfig.from_pretrained(tmp_path) == ARMTConfig.from_pretrained(SHIPPED)
    reloaded = ARMTModel.from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), auto.state_dict().values()))
    shutil.copy(SHIPPED / "tokenizer.json", tmp_path)
    model, _ = load_model_dir(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), auto.state_dict().values()))
    again = AutoModel.from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), auto.state_dict().values()))


def test_bf16_round_trip_writes_the_shipped_weights_file(tmp_path: Path) -> None:
    AutoModel.from_pretrained(SHIPPED, **{DTYPE: torch.bfloat16}).save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == (SHIPPED / "model.safetensors").read_bytes()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved.get("dtype", saved.get("torch_dtype")) == "bfloat16"  # torch_dtype before transformers 4.56


def test_config_refuses_what_armt_config_refuses(tmp_path: Path) -> None:
    cfg = json.loads((SHIPPED / "config.json").read_text())
    for key, value, error in [("n_layer", 3, TypeError), ("armt_version", 99, ValueError)]:
        (tmp_path / "config.json").write_text(json.dumps({**cfg, key: value}))
        with pytest.raises(error):
            AutoConfig.from_pretrained(tmp_path)


def test_new_model_from_config_starts_as_armt_does() -> None:
    """A model built from a config (no weights) gets ARMTModel's initialisation, not transformers' generic one."""
    config = AutoConfig.for_model(
        MODEL_TYPE, vocab_size=64, d_model=32, n_layers=1, n_heads=2, d_ff=64, segment_len=8, n_mem=2, d_mem=8
    )
    model = AutoModel.from_config(config)
    assert isinstance(model, ARMTHFModel) and model.config.d_key == config.to_armt().d_key
    assert ARMTHFConfig.from_armt(config.to_armt()).to_dict() == config.to_dict()
    assert not model.mem_heads[0].read_norm.weight.any() and not model.conv.conv.weight.any()  # zero_init
    assert model.new_memory(3).A.shape == ARMTModel(config.to_armt()).new_memory(3).A.shape


