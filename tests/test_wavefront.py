"""The wavefront schedule (every layer on another segment in one step) reads what segment-by-segment reading reads.

On a GPU the engine reads only this way, inside a CUDA graph; here the same steps run eagerly in fp32."""

from __future__ import annotations

import os
import shutil

os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import pytest
import torch
from conftest import babi_text

from longqa.engine import Engine
from longqa.input.reader import Document
from longqa.input.segments import Segmenter, lockstep
from longqa.model import ARMTConfig, ARMTModel
from longqa.wavefront import WavefrontReader, matmul_precision, schedule

torch.set_num_threads(1)


def trained_like_model(n_layers: int = 3) -> ARMTModel:
    cfg = ARMTConfig(vocab_size=60, d_model=16, n_layers=n_layers, n_heads=2, d_ff=32, segment_len=8, n_mem=3, d_mem=4)
    torch.manual_seed(0)
    model = ARMTModel(cfg).eval()
    with torch.no_grad():  # zero-initialised parts (read gain, conv) made to matter
        for head in model.mem_heads:
            head.W_V.weight.normal_(std=0.5)
            head.read_norm.weight.normal_(std=0.5)
        model.conv.conv.weight.normal_(std=0.1)
    return model


@pytest.mark.parametrize(
    "n_layers, diagonal, compile",
    [(1, True, False), (3, True, False), (3, False, False), pytest.param(3, True, True, marks=pytest.mark.slow)],
)
def test_reader_states_equal_the_segment_loop(n_layers: int, diagonal: bool, compile: bool) -> None:
    """The wavefront reader against ARMTModel.read_context, the one segment loop training and eager reading run."""
    if compile and not shutil.which(os.environ.get("CXX", "g++")):
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    model = trained_like_model(n_layers)
    S, B = model.config.segment_len, 4
    g = torch.Generator().manual_seed(1)
    # 5, 1, 0 and 3 segments: rows end at different steps, one never starts; and memories that are not empty.
    docs = [torch.randint(3, 60, (n * S,), generator=g).tolist() for n in (5, 1, 0, 3)]
    with torch.inference_mode():
        start = model.read_context([(torch.randint(3, 60, (B, S), generator=g), None)] * 2, model.new_memory(B))
        expected = [
            model.read_context(((torch.tensor([doc[i : i + S]]), None) for i in range(0, len(doc), S)), start.rows(slice(b, b + 1)))
            for b, doc in enumerate(docs)
        ]

    reader = WavefrontReader(model, B, diagonal, compile)  # compiled: what --compile runs on a GPU
    reader.load(start)
    with torch.inference_mode():
        steps = list(schedule(lockstep([Segmenter(S).push(d) for d in docs]), B, reader.depth, 0))
        for _, ids in steps:
            reader.run(ids)
    got = reader.state()
    assert len(steps) == 5 + (n_layers - 1 if diagonal else 0)  # the longest document, then the drain
    assert sum(n for n, _ in steps) == sum(map(len, docs))
    for b in range(B):
        torch.testing.assert_close(got.A[b : b + 1], expected[b].A, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.z[b : b + 1], expected[b].z, rtol=1e-5, atol=1e-5)
    assert torch.equal(got.A[2], start.A[2])  # the row without a segment is untouched, bit for bit


@pytest.mark.parametrize("diagonal", [True, False])
def test_engine_answers_the_same_through_the_reader(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, diagonal: bool
) -> None:
    """The engine's GPU path (read_ids with a step reader), run here uncaptured, against plain reading."""
    files = []
    for i, n in enumerate((40, 7, 90)):
        f = tmp_path / f"d{i}.txt"
        f.write_text(babi_text(n, seed=i))
        files.append(f)
    plain = Engine(tiny_model, "cpu", use_graphs=False)
    fast = Engine(tiny_model, "cpu")
    monkeypatch.setattr(fast, "_reader", lambda batch: WavefrontReader(fast.model, batch, diagonal))
    questions = ["Where is Mary?", "Where is John?"]
    results = []
    for engine in (plain, fast):
        mems = [engine.new_memory() for _ in files]
        engine.read(mems, [[Document(str(f), f.stat().st_size)] for f in files])
        results.append((mems, engine.answer(mems, questions)))
    (m_plain, a_plain), (m_fast, a_fast) = results
    assert a_fast == a_plain
    for p, f in zip(m_plain, m_fast):
        assert (f.tokens, f.pending, f.sources) == (p.tokens, p.pending, p.sources)
        torch.testing.assert_close(f.state.A, p.state.A, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(f.state.z, p.state.z, rtol=1e-5, atol=1e-5)


def test_matmul_precision_is_restored() -> None:
    # The reader captures its step with tf32 products; the rest of the process keeps its own setting.
    before = torch.get_float32_matmul_precision()
    with matmul_precision("high"):
        assert torch.get_float32_matmul_precision() == "high"
    assert torch.get_float32_matmul_precision() == before
    with pytest.raises(ValueError), matmul_precision("medium"):
        raise ValueError
    assert torch.get_float32_matmul_precision() == before
