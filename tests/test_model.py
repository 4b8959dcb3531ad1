"""The ARMT math (docs/architecture.md) on controlled tensors and tiny random models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from longqa.checkpoint import load_model_dir
from longqa.errors import InputError
from longqa.model import ARMT_VERSION, ARMTConfig, ARMTModel, MemoryHead, MemoryState, dpfp, split_segments

torch.set_num_threads(1)

D_MODEL, D_MEM = 8, 4


def small_config(**kw) -> ARMTConfig:
    base = dict(vocab_size=50, d_model=16, n_layers=2, n_heads=2, d_ff=32, segment_len=8, n_mem=3, d_mem=4)
    base.update(kw)
    return ARMTConfig(**base)


def controlled_memory() -> MemoryHead:
    """W_Q = W_K (a read with h = m looks up exactly the written key), W_V = I (v = m), beta = 1."""
    mem = MemoryHead(ARMTConfig(d_model=D_MODEL, d_mem=D_MEM))
    torch.manual_seed(0)
    with torch.no_grad():
        w = torch.randn(D_MEM, D_MODEL)
        mem.W_Q.weight.copy_(w)
        mem.W_K.weight.copy_(w)
        mem.W_V.weight.copy_(torch.eye(D_MODEL))
        mem.W_beta.weight.zero_()
        mem.W_beta.bias.fill_(100.0)  # sigmoid(100) == 1.0 in fp32
    return mem


def lookup(mem: MemoryHead, h: torch.Tensor, A: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """What a read finds before its RMS norm: the delta rule's own arithmetic."""
    return mem._lookup(dpfp(mem.W_Q(h)), A, z)


def empty(batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(batch, 6 * D_MEM, D_MODEL), torch.zeros(batch, 6 * D_MEM)


# ---- DPFP ---------------------------------------------------------------------------------------


def test_dpfp_is_nonnegative_with_six_times_the_size() -> None:
    x = torch.randn(3, 5, 7)
    phi = dpfp(x)
    assert phi.shape == (3, 5, 42)
    assert (phi >= 0).all()
    assert (phi > 0).any()


def test_dpfp_matches_the_formula_on_one_vector() -> None:
    x = torch.tensor([1.0, -2.0, 3.0])
    r = [1.0, 0.0, 3.0, 0.0, 2.0, 0.0]  # [relu(x), relu(-x)]
    expected = [r[i] * r[(i - j) % 6] for j in (1, 2, 3) for i in range(6)]
    assert dpfp(x).tolist() == pytest.approx(expected)


# ---- delta rule and gamma -----------------------------------------------------------------------


def test_write_then_read_same_key_returns_the_value() -> None:
    mem = controlled_memory()
    m = torch.randn(1, 1, D_MODEL)
    A, z = mem.write(m, *empty(), None)
    assert A.abs().sum() > 0
    assert torch.allclose(lookup(mem, m, A, z), m, atol=1e-4)


def test_empty_memory_reads_exact_zeros() -> None:
    mem = controlled_memory()
    h = torch.randn(2, 5, D_MODEL)
    assert torch.equal(mem.read(h, *empty(2)), torch.zeros_like(h))


def test_lookup_of_an_outer_product_returns_the_value() -> None:
    mem = controlled_memory()
    phi = dpfp(torch.randn(1, 1, D_MEM))
    v = torch.randn(1, 1, D_MODEL)
    A = phi.transpose(1, 2) @ v  # (1, d_key, d_model)
    z = phi[:, 0]
    assert torch.allclose(mem._lookup(phi, A, z), v, atol=1e-5)


def test_rewriting_a_key_replaces_its_value() -> None:
    """Delta rule: the second value replaces the first instead of being added to it."""
    mem = controlled_memory()
    k = torch.randn(1, 1, D_MODEL)
    A, z = mem.write(k, *empty(), None)
    # Same key, new value: change W_V so that the same memory-token output now carries -3 k.
    with torch.no_grad():
        mem.W_V.weight.mul_(-3.0)
    A, z = mem.write(k, A, z, None)
    assert torch.allclose(lookup(mem, k, A, z), -3.0 * k, atol=1e-3)


def test_gamma_is_one_on_first_write_and_zero_on_rewrite() -> None:
    mem = controlled_memory()
    m = torch.randn(1, 1, D_MODEL)
    phi = dpfp(mem.W_K(m))[:, 0]
    A, z1 = mem.write(m, *empty(), None)
    assert torch.allclose(z1, phi, rtol=1e-6)  # gamma = 1 on the first write
    A, z2 = mem.write(m, A, z1, None)
    assert torch.allclose(z2, z1, rtol=1e-4, atol=1e-6)  # gamma ~ 0: z not inflated
    assert not torch.allclose(z2, 2 * z1)
    for _ in range(50):
        A, z2 = mem.write(m, A, z2, None)
    assert torch.allclose(z2, z1, rtol=1e-3)


def test_write_cap_stops_simultaneous_rewrites_from_overshooting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key already counted in z (gamma = 0), rewritten by 8 memory tokens at once: without the cap the
    8 corrections add up and the lookup lands 7x the error past its target; with it, on the target."""
    k = torch.randn(1, 1, D_MODEL)
    errors = {}
    for cap in (False, True):
        mem = controlled_memory()
        if not cap:
            monkeypatch.setattr(mem, "_gain_cap", lambda phi_k, beta, z: torch.ones(()))
        A, z = mem.write(k, *empty(), None)
        with torch.no_grad():
            mem.W_V.weight.mul_(-3.0)
        A, z = mem.write(k.expand(1, 8, -1), A, z, None)
        errors[cap] = float((lookup(mem, k, A, z) + 3 * k).norm().detach() / (4 * k).norm())
    assert errors[False] == pytest.approx(7.0, rel=1e-3)
    assert errors[True] < 1e-3


def test_read_norm_keeps_a_read_the_same_size_however_large_the_memory() -> None:
    mem = MemoryHead(ARMTConfig(d_model=D_MODEL, d_mem=D_MEM))  # gain 1 (ARMTModel's starts at 0)
    h = torch.randn(1, 5, D_MODEL)
    A, z = torch.rand(1, 6 * D_MEM, D_MODEL), torch.rand(1, 6 * D_MEM)
    small, large = mem.read(h, A, z), mem.read(h, 1000 * A, z)
    assert torch.allclose(small.pow(2).mean(-1), torch.ones(1, 5), atol=1e-3)
    assert torch.allclose(large, small, atol=1e-4)  # unnormalised, the second read is 1000 times the first
    assert torch.equal(mem.read(h, *empty()), torch.zeros_like(h))


def test_read_norm_model_learns_gain_and_values_from_the_start() -> None:
    """With a zero gain, W_V must start non-zero: were both zero, neither would get a gradient."""
    torch.manual_seed(0)
    model = ARMTModel(small_config())
    assert all(torch.equal(m.read_norm.weight, torch.zeros_like(m.read_norm.weight)) for m in model.mem_heads)
    S = model.config.segment_len
    _, state = model.context_segment(torch.randint(3, 50, (2, S)), model.new_memory(2))
    h, _ = model.context_segment(torch.randint(3, 50, (2, S)), state)
    h.pow(2).sum().backward()
    for m in model.mem_heads:
        assert m.W_V.weight.abs().sum() > 0 and m.read_norm.weight.grad.abs().sum() > 0


def test_gamma_is_one_for_a_key_orthogonal_to_the_memory() -> None:
    mem = MemoryHead(ARMTConfig(d_model=D_MEM, d_mem=D_MEM))
    with torch.no_grad():
        mem.W_K.weight.copy_(torch.eye(D_MEM))
        mem.W_V.weight.copy_(torch.eye(D_MEM))
    k1 = torch.tensor([[[1.0, 2.0, 0.0, 0.0]]])  # disjoint supports: phi(k1) . phi(k2) == 0
    k2 = torch.tensor([[[0.0, 0.0, 1.0, 3.0]]])
    A, z = torch.zeros(1, 6 * D_MEM, D_MEM), torch.zeros(1, 6 * D_MEM)
    A, z = mem.write(k1, A, z, None)
    A, z = mem.write(k2, A, z, None)
    assert torch.allclose(z, dpfp(k1)[:, 0] + dpfp(k2)[:, 0])


def test_inactive_rows_keep_their_memory_bit_for_bit() -> None:
    mem = controlled_memory()
    A0 = torch.randn(2, 6 * D_MEM, D_MODEL)
    z0 = torch.rand(2, 6 * D_MEM)
    A, z = mem.write(torch.randn(2, 3, D_MODEL), A0, z0, torch.tensor([True, False]))
    assert torch.equal(A[1], A0[1]) and torch.equal(z[1], z0[1])
    assert not torch.equal(A[0], A0[0])


# ---- whole model ---------------------------------------------------------------------------------


def random_model(seed: int = 0, **kw) -> ARMTModel:
    """A model whose memory matters, as a trained one's does: values and read gains away from 0."""
    torch.manual_seed(seed)
    model = ARMTModel(small_config(**kw)).eval()
    with torch.no_grad():
        for head in model.mem_heads:
            head.W_V.weight.normal_(std=0.5)
            head.read_norm.weight.normal_(1.0, 0.2)
    return model


def test_fresh_model_reads_nothing_from_what_it_writes() -> None:
    """The read gain starts at 0: an untrained memory adds nothing, and early training sees a plain transformer."""
    torch.manual_seed(0)
    model = ARMTModel(small_config()).eval()
    assert all(torch.equal(m.read_norm.weight, torch.zeros_like(m.read_norm.weight)) for m in model.mem_heads)
    S = model.config.segment_len
    ids = torch.randint(3, 50, (2, S))
    with torch.no_grad():
        _, state = model.context_segment(ids, model.new_memory(2))
        assert state.A.abs().sum() > 0 and state.z.abs().sum() > 0  # written...
        ids2 = torch.randint(3, 50, (2, S))
        h_mem, _ = model.context_segment(ids2, state)
        h_fresh, _ = model.context_segment(ids2, model.new_memory(2))
    assert torch.equal(h_mem, h_fresh)  # ... and not read


def test_fresh_model_hidden_states_equal_a_run_without_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = ARMTModel(small_config()).eval()
    ids = torch.randint(3, 50, (1, model.config.segment_len))
    with torch.no_grad():
        _, state = model.context_segment(ids, model.new_memory(1))
        h_mem, _ = model.context_segment(ids, state)
        for m in model.mem_heads:
            monkeypatch.setattr(m, "read", lambda h, A, z: torch.zeros_like(h))
        h_plain, _ = model.context_segment(ids, state)
    assert torch.equal(h_mem, h_plain)


def test_trained_memory_changes_the_hidden_states() -> None:
    """Counterpart of the test above: with W_V != 0 the memory is not a no-op (the tests can fail)."""
    model = random_model()
    ids = torch.randint(3, 50, (1, model.config.segment_len))
    with torch.no_grad():
        _, state = model.context_segment(ids, model.new_memory(1))
        h_mem, _ = model.context_segment(ids, state)
        h_fresh, _ = model.context_segment(ids, model.new_memory(1))
    assert state.A.abs().sum() > 0
    assert not torch.allclose(h_mem, h_fresh)


def _some_state(model: ARMTModel, batch: int, seed: int) -> MemoryState:
    g = torch.Generator().manual_seed(seed)
    state = model.new_memory(batch)
    with torch.no_grad():
        for _ in range(2):
            ids = torch.randint(3, 50, (batch, model.config.segment_len), generator=g)
            state = model.context_segment(ids, state)[1]
    return state


def test_padding_only_row_leaves_its_state_untouched() -> None:
    model = random_model()
    state = _some_state(model, 3, seed=1)
    ids = torch.randint(3, 50, (3, model.config.segment_len))
    ids[1] = model.config.pad_token_id
    new = model.context_segment(ids, state, torch.tensor([8, 0, 5]))[1]
    assert torch.equal(new.A[1], state.A[1]) and torch.equal(new.z[1], state.z[1])
    assert not torch.equal(new.A[0], state.A[0]) and not torch.equal(new.A[2], state.A[2])


def test_row_in_a_ragged_batch_equals_the_row_alone() -> None:
    model = random_model()
    S = model.config.segment_len
    state = _some_state(model, 4, seed=2)
    ids = torch.randint(3, 50, (4, S))
    lengths = torch.tensor([S, 3, 0, 7])
    batched = model.context_segment(ids, state, lengths)[1]
    for b in range(4):
        alone = model.context_segment(ids[b : b + 1], state.rows(slice(b, b + 1)), lengths[b : b + 1])[1]
        assert torch.allclose(batched.A[b], alone.A[0], atol=1e-5), b
        assert torch.allclose(batched.z[b], alone.z[0], atol=1e-5), b
    full = model.context_segment(ids[:1], state.rows(slice(0, 1)))[1]  # no lengths: all full, causal fast path
    assert torch.allclose(batched.A[0], full.A[0], atol=1e-5)


def test_padding_content_does_not_matter() -> None:
    model = random_model()
    S = model.config.segment_len
    state = _some_state(model, 1, seed=3)
    ids = torch.randint(3, 50, (1, S))
    other = ids.clone()
    other[0, 4:] = torch.randint(3, 50, (S - 4,))
    a = model.context_segment(ids, state, torch.tensor([4]))[1]
    b = model.context_segment(other, state, torch.tensor([4]))[1]
    assert torch.allclose(a.A, b.A, atol=1e-6) and torch.allclose(a.z, b.z, atol=1e-6)


def test_hidden_states_are_causal_within_a_segment() -> None:
    model = random_model()
    S = model.config.segment_len
    ids = torch.randint(3, 50, (1, S))
    later = ids.clone()
    later[0, 5] = (ids[0, 5] + 1) % 50
    with torch.no_grad():
        h1, _ = model.context_segment(ids, model.new_memory(1))
        h2, _ = model.context_segment(later, model.new_memory(1))
    assert torch.allclose(h1[0, :5], h2[0, :5], atol=1e-6)
    assert not torch.allclose(h1[0, 5], h2[0, 5])


def test_answer_of_a_row_in_a_batch_equals_the_row_alone() -> None:
    model = random_model(max_answer_tokens=3)
    state = _some_state(model, 2, seed=4)
    qs = [[5, 6, 7, 1], [8, 1]]
    both = model.answer(state, qs)
    assert both[0] == model.answer(state.rows(slice(0, 1)), qs[:1])[0]
    assert both[1] == model.answer(state.rows(slice(1, 2)), qs[1:])[0]
    assert all(len(a) <= 3 for a in both)


# ---- config and checkpoints ---------------------------------------------------------------------


def test_other_armt_version_is_refused() -> None:
    with pytest.raises(ValueError, match="armt_version"):
        ARMTConfig(armt_version=ARMT_VERSION + 1)
    assert ARMTConfig().d_key == 6 * ARMTConfig().d_mem


def test_checkpoint_of_other_version_is_refused_on_load(tiny_model: Path, tmp_path: Path) -> None:
    d = tmp_path / "future"
    shutil.copytree(tiny_model, d)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["armt_version"] == ARMT_VERSION
    cfg["armt_version"] = ARMT_VERSION + 1
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="armt_version"):
        load_model_dir(d)


def test_save_pretrained_round_trip_is_exact_in_fp32_and_rounds_to_bf16(tmp_path: Path) -> None:
    model = random_model(seed=5)
    model.save_pretrained(tmp_path / "bf16")
    bf16 = ARMTModel.from_pretrained(tmp_path / "bf16")
    assert all(torch.equal(v.to(torch.bfloat16).float(), bf16.state_dict()[k]) for k, v in model.state_dict().items())
    assert any(not torch.equal(v, bf16.state_dict()[k]) for k, v in model.state_dict().items())
    model.save_pretrained(tmp_path / "ckpt", dtype=torch.float32)
    loaded = ARMTModel.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    state = _some_state(model, 1, seed=6)
    assert torch.equal(state.A, _some_state(loaded, 1, seed=6).A)


def test_unknown_config_key_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    d = tmp_path / "typo"
    shutil.copytree(tiny_model, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["n_layer"] = 3  # a typo must not load as the default shape
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="cannot load model"):
        load_model_dir(d)


def test_shipped_checkpoint_loads_without_transformers() -> None:
    """Loading must not import transformers (longqa.hf registers the model with it, for those who want it):
    its import cost most of a `longqa ask` start-up (docs/decisions.md)."""
    shipped = Path(__file__).resolve().parent.parent / "weights" / "longqa-armt-small"
    code = ("import sys; from longqa.checkpoint import load_model_dir; "
            f"m, _ = load_model_dir({str(shipped)!r}); print(m.config.n_layers, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(ARMTModel.from_pretrained(shipped).config.n_layers), "False"]


def test_read_context_is_context_segment_in_a_loop_and_split_segments_marks_ragged_ones() -> None:
    model = random_model(seed=11)
    S = model.config.segment_len
    ids, lengths = torch.randint(3, 50, (2, 3 * S)), torch.tensor([3 * S, S + 2])
    parts = list(split_segments(ids, lengths, S))
    assert [None if n is None else n.tolist() for _, n in parts] == [None, [S, 2], [S, 0]]
    seen: list[tuple[int, MemoryState]] = []
    with torch.no_grad():
        looped = model.read_context(parts, model.new_memory(2), on_segment=lambda s, h, m: seen.append((s, m)))
        memory = model.new_memory(2)
        for seg, n in parts:
            memory = model.context_segment(seg, memory, n)[1]
    assert torch.equal(looped.A, memory.A) and [s for s, _ in seen] == [0, 1, 2]
    assert torch.equal(looped.A[1], seen[1][1].A[1])  # the second row ended in segment 2: unchanged after it
