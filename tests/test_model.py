"""The ARMT math (../shared/armt.md) on controlled tensors and tiny random models."""

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
from longqa.model import ARMT_VERSION, ARMTConfig, ARMTModel, AssociativeMemory, MemoryState, alibi_bias, dpfp, layer_forward

torch.set_num_threads(1)

D_MODEL, D_MEM = 8, 4


def small_config(**kw) -> ARMTConfig:
    base = dict(vocab_size=50, d_model=16, n_layers=2, n_heads=2, d_ff=32, segment_len=8, n_mem=3, d_mem=4)
    base.update(kw)
    return ARMTConfig(**base)


def controlled_memory() -> AssociativeMemory:
    """W_Q = W_K (a read with h = m looks up exactly the written key), W_V = I (v = m), beta = 1."""
    mem = AssociativeMemory(ARMTConfig(d_model=D_MODEL, d_mem=D_MEM))
    torch.manual_seed(0)
    with torch.no_grad():
        w = torch.randn(D_MEM, D_MODEL)
        mem.W_Q.weight.copy_(w)
        mem.W_K.weight.copy_(w)
        mem.W_V.weight.copy_(torch.eye(D_MODEL))
        mem.W_beta.weight.zero_()
        mem.W_beta.bias.fill_(100.0)  # sigmoid(100) == 1.0 in fp32
    return mem


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
    assert torch.allclose(mem.read(m, A, z), m, atol=1e-4)


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
    assert torch.allclose(mem.read(k, A, z), -3.0 * k, atol=1e-3)


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


def test_write_cap_stops_simultaneous_rewrites_from_overshooting() -> None:
    """A key already counted in z (gamma = 0), rewritten by 8 memory tokens at once: without the cap the
    8 corrections add up and the lookup lands 7x the error past its target; with it, on the target."""
    k = torch.randn(1, 1, D_MODEL)
    errors = {}
    for cap in (False, True):
        mem = controlled_memory()
        mem.write_cap = cap
        A, z = mem.write(k, *empty(), None)
        with torch.no_grad():
            mem.W_V.weight.mul_(-3.0)
        A, z = mem.write(k.expand(1, 8, -1), A, z, None)
        errors[cap] = float((mem.read(k, A, z) + 3 * k).norm().detach() / (4 * k).norm())
    assert errors[False] == pytest.approx(7.0, rel=1e-3)
    assert errors[True] < 1e-3


def test_write_cap_leaves_a_first_write_unchanged() -> None:
    torch.manual_seed(0)
    model = ARMTModel(small_config()).eval()
    with torch.no_grad():
        for mem in model.memory:
            mem.W_V.weight.normal_(std=0.5)
    ids = torch.randint(3, 50, (2, 8))
    plain = model.read(ids, model.new_state(2))
    for mem in model.memory:
        mem.write_cap = True
    capped = model.read(ids, model.new_state(2))
    assert torch.allclose(plain.A, capped.A) and torch.equal(plain.z, capped.z)


def test_write_clip_scales_long_vectors_to_the_clip_and_leaves_short_ones() -> None:
    """With v = m and one key, the lookup after a first write returns what was written: m itself when its
    RMS is within the clip, m scaled to RMS = clip when it is longer."""
    k = torch.randn(1, 1, D_MODEL)
    rms = float(k.pow(2).mean().sqrt())
    for clip, expect in ((2 * rms, k), (rms / 4, k / 4)):
        mem = controlled_memory()
        mem.write_clip = clip
        A, z = mem.write(k, *empty(), None)
        assert torch.allclose(mem.read(k, A, z), expect, atol=1e-4)


def test_write_clip_is_saved_per_layer_and_checked(tmp_path: Path) -> None:
    model = ARMTModel(small_config(write_clip=[3.0, 5.0]))
    assert [m.write_clip for m in model.memory] == [3.0, 5.0]
    model.save_pretrained(tmp_path / "ckpt")
    assert [m.write_clip for m in ARMTModel.from_pretrained(tmp_path / "ckpt").memory] == [3.0, 5.0]
    with pytest.raises(ValueError, match="write_clip has 1 values for 2 layers"):
        small_config(write_clip=[3.0])


def test_read_norm_keeps_a_read_the_same_size_however_large_the_memory() -> None:
    mem = AssociativeMemory(ARMTConfig(d_model=D_MODEL, d_mem=D_MEM, read_norm=True))  # gain 1 (ARMTModel's is 0)
    h = torch.randn(1, 5, D_MODEL)
    A, z = torch.rand(1, 6 * D_MEM, D_MODEL), torch.rand(1, 6 * D_MEM)
    small, large = mem.read(h, A, z), mem.read(h, 1000 * A, z)
    assert torch.allclose(small.pow(2).mean(-1), torch.ones(1, 5), atol=1e-3)
    assert torch.allclose(large, small, atol=1e-4)  # unnormalised, the second read is 1000 times the first
    assert torch.equal(mem.read(h, *empty()), torch.zeros_like(h))


def test_read_norm_model_learns_gain_and_values_from_the_start() -> None:
    """With a zero gain, W_V must start non-zero: were both zero, neither would get a gradient."""
    torch.manual_seed(0)
    model = ARMTModel(small_config(read_norm=True))
    assert all(torch.equal(m.norm.weight, torch.zeros_like(m.norm.weight)) for m in model.memory)
    S = model.config.segment_len
    _, state = model.read_segment(torch.randint(3, 50, (2, S)), model.new_state(2))
    h, _ = model.read_segment(torch.randint(3, 50, (2, S)), state)
    h.pow(2).sum().backward()
    for m in model.memory:
        assert m.W_V.weight.abs().sum() > 0 and m.norm.weight.grad.abs().sum() > 0


def test_gamma_is_one_for_a_key_orthogonal_to_the_memory() -> None:
    mem = AssociativeMemory(ARMTConfig(d_model=D_MEM, d_mem=D_MEM))
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
    torch.manual_seed(seed)
    model = ARMTModel(small_config(**kw)).eval()
    with torch.no_grad():
        for mem in model.memory:
            mem.W_V.weight.normal_(std=0.5)
            if mem.token_writes:  # their gate opened, as training opens it
                mem.W_Vt.weight.normal_(std=0.5)
                mem.token_gate.fill_(0.7)
    return model


def test_fresh_model_has_zero_value_projection_and_writes_nothing() -> None:
    torch.manual_seed(0)
    model = ARMTModel(small_config()).eval()
    assert all(torch.equal(m.W_V.weight, torch.zeros_like(m.W_V.weight)) for m in model.memory)
    S = model.config.segment_len
    ids = torch.randint(3, 50, (2, S))
    with torch.inference_mode():
        _, state = model.read_segment(ids, model.new_state(2))
        assert torch.equal(state.A, torch.zeros_like(state.A))
        assert state.z.abs().sum() > 0  # keys were written, values are zero
        ids2 = torch.randint(3, 50, (2, S))
        h_mem, _ = model.read_segment(ids2, state)
        h_fresh, _ = model.read_segment(ids2, model.new_state(2))
    assert torch.equal(h_mem, h_fresh)


def test_fresh_model_hidden_states_equal_a_run_without_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = ARMTModel(small_config()).eval()
    ids = torch.randint(3, 50, (1, model.config.segment_len))
    with torch.inference_mode():
        _, state = model.read_segment(ids, model.new_state(1))
        h_mem, _ = model.read_segment(ids, state)
        for m in model.memory:
            monkeypatch.setattr(m, "read", lambda h, A, z: torch.zeros_like(h))
        h_plain, _ = model.read_segment(ids, state)
    assert torch.equal(h_mem, h_plain)


def test_a_tapped_layer_is_that_layers_output_under_the_final_norm() -> None:
    """read_segment(tap=l): the third item is layer l's output (for training's where-targets, Stage.where_layer),
    and the outputs and the written memory are the same as without a tap."""
    model = random_model()
    S, n_mem = model.config.segment_len, model.config.n_mem
    ids = torch.randint(3, 50, (2, S))
    with torch.no_grad():
        _, state = model.read_segment(ids, model.new_state(2))
        h, after = model.read_segment(ids, state)
        h_last, after_last, tapped_last = model.read_segment(ids, state, tap=model.config.n_layers - 1)
        _, _, tapped = model.read_segment(ids, state, tap=0)
        x, _, _ = layer_forward(model.blocks[0], model.memory[0], model.segment_input(ids), state.A[:, 0], state.z[:, 0], None, None, n_mem)
    assert torch.equal(h_last, h) and torch.equal(tapped_last, h) and torch.equal(after_last.A, after.A)
    torch.testing.assert_close(tapped, model.norm(x)[:, :S])
    assert not torch.allclose(tapped, h)


def test_trained_memory_changes_the_hidden_states() -> None:
    """Counterpart of the test above: with W_V != 0 the memory is not a no-op (the tests can fail)."""
    model = random_model()
    ids = torch.randint(3, 50, (1, model.config.segment_len))
    with torch.inference_mode():
        _, state = model.read_segment(ids, model.new_state(1))
        h_mem, _ = model.read_segment(ids, state)
        h_fresh, _ = model.read_segment(ids, model.new_state(1))
    assert state.A.abs().sum() > 0
    assert not torch.allclose(h_mem, h_fresh)


def _some_state(model: ARMTModel, batch: int, seed: int) -> MemoryState:
    g = torch.Generator().manual_seed(seed)
    state = model.new_state(batch)
    with torch.inference_mode():
        for _ in range(2):
            ids = torch.randint(3, 50, (batch, model.config.segment_len), generator=g)
            state = model.read(ids, state)
    return state


VARIANTS = [{}, {"alibi": True}, {"token_writes": True}]


@pytest.mark.parametrize("kw", VARIANTS, ids=str)
def test_padding_only_row_leaves_its_state_untouched(kw: dict) -> None:
    model = random_model(**kw)
    state = _some_state(model, 3, seed=1)
    ids = torch.randint(3, 50, (3, model.config.segment_len))
    ids[1] = model.config.pad_token_id
    new = model.read(ids, state, torch.tensor([8, 0, 5]))
    assert torch.equal(new.A[1], state.A[1]) and torch.equal(new.z[1], state.z[1])
    assert not torch.equal(new.A[0], state.A[0]) and not torch.equal(new.A[2], state.A[2])


@pytest.mark.parametrize("kw", VARIANTS, ids=str)
def test_row_in_a_ragged_batch_equals_the_row_alone(kw: dict) -> None:
    model = random_model(**kw)
    S = model.config.segment_len
    state = _some_state(model, 4, seed=2)
    ids = torch.randint(3, 50, (4, S))
    lengths = torch.tensor([S, 3, 0, 7])
    batched = model.read(ids, state, lengths)
    for b in range(4):
        alone = model.read(ids[b : b + 1], state.rows(slice(b, b + 1)), lengths[b : b + 1])
        assert torch.allclose(batched.A[b], alone.A[0], atol=1e-5), b
        assert torch.allclose(batched.z[b], alone.z[0], atol=1e-5), b
    full = model.read(ids[:1], state.rows(slice(0, 1)))  # no lengths: all full, causal fast path
    assert torch.allclose(batched.A[0], full.A[0], atol=1e-5)


@pytest.mark.parametrize("kw", VARIANTS, ids=str)
def test_padding_content_does_not_matter(kw: dict) -> None:
    model = random_model(**kw)
    S = model.config.segment_len
    state = _some_state(model, 1, seed=3)
    ids = torch.randint(3, 50, (1, S))
    other = ids.clone()
    other[0, 4:] = torch.randint(3, 50, (S - 4,))
    a = model.read(ids, state, torch.tensor([4]))
    b = model.read(other, state, torch.tensor([4]))
    assert torch.allclose(a.A, b.A, atol=1e-6) and torch.allclose(a.z, b.z, atol=1e-6)


@pytest.mark.parametrize("alibi", [False, True])
def test_hidden_states_are_causal_within_a_segment(alibi: bool) -> None:
    model = random_model(alibi=alibi)
    S = model.config.segment_len
    ids = torch.randint(3, 50, (1, S))
    later = ids.clone()
    later[0, 5] = (ids[0, 5] + 1) % 50
    with torch.inference_mode():
        h1, _ = model.read_segment(ids, model.new_state(1))
        h2, _ = model.read_segment(later, model.new_state(1))
    assert torch.allclose(h1[0, :5], h2[0, :5], atol=1e-6)
    assert not torch.allclose(h1[0, 5], h2[0, 5])


@pytest.mark.parametrize("alibi", [False, True])
def test_answer_of_a_row_in_a_batch_equals_the_row_alone(alibi: bool) -> None:
    model = random_model(alibi=alibi, max_answer_tokens=3)
    state = _some_state(model, 2, seed=4)
    qs = [[5, 6, 7, 1], [8, 1]]
    both = model.answer(state, qs)
    assert both[0] == model.answer(state.rows(slice(0, 1)), qs[:1])[0]
    assert both[1] == model.answer(state.rows(slice(1, 2)), qs[1:])[0]
    assert all(len(a) <= 3 for a in both)


def test_a_grown_model_computes_what_it_did_until_its_token_gates_open() -> None:
    model = random_model(seed=7, write_cap=True, read_norm=True)
    with torch.no_grad():
        for mem in model.memory:
            mem.norm.weight.normal_(std=0.5)
    grown = model.grown(token_writes=True).eval()
    assert grown.config.token_writes and not model.config.token_writes
    for mem in grown.memory:
        assert float(mem.token_gate) == 0 and torch.equal(mem.W_Kt.weight, mem.W_K.weight)
    S = model.config.segment_len
    g = torch.Generator().manual_seed(8)
    states = [model.new_state(2), grown.new_state(2)]
    with torch.inference_mode():
        for lengths in ([S, S], [S, 3], [5, 0]):  # full, ragged and one padding-only row
            ids = torch.randint(3, 50, (2, S), generator=g)
            outs = [m.read_segment(ids, st, torch.tensor(lengths)) for m, st in zip((model, grown), states)]
            assert torch.equal(outs[0][0], outs[1][0])
            states = [o[1] for o in outs]
            assert torch.equal(states[0].A, states[1].A) and torch.equal(states[0].z, states[1].z)
        for mem in grown.memory:
            mem.token_gate.fill_(0.5)
        opened = grown.read(ids, states[1])
    assert not torch.allclose(opened.A, model.read(ids, states[0]).A)
    with pytest.raises(ValueError, match="can be added to a trained model, not \\['n_mem'\\]"):
        model.grown(n_mem=4)


def test_layers_added_on_top_pass_the_outputs_and_answers_through() -> None:
    model = random_model(seed=10, read_norm=True)
    with torch.no_grad():
        for mem in model.memory:
            mem.norm.weight.normal_(std=0.5)
    deeper = model.grown(n_layers=4).eval()
    S = model.config.segment_len
    ids = torch.randint(3, 50, (2, S))
    with torch.inference_mode():
        h, state = model.read_segment(ids, model.new_state(2), torch.tensor([S, 5]))
        h4, state4 = deeper.read_segment(ids, deeper.new_state(2), torch.tensor([S, 5]))
        assert torch.equal(h, h4) and torch.equal(state.A, state4.A[:, :2]) and state4.A[:, 2:].abs().sum() > 0
        assert deeper.answer(state4, [[5, 6, 1], [7, 1]]) == model.answer(state, [[5, 6, 1], [7, 1]])
    with pytest.raises(ValueError, match="n_layers can only grow from 2"):
        model.grown(n_layers=1)
    with pytest.raises(ValueError, match="not with a write clip"):
        random_model(write_clip=[9.0, 9.0]).grown(n_layers=3)


def test_token_writes_fill_the_memory_when_the_memory_tokens_write_nothing() -> None:
    model = random_model(seed=9, token_writes=True)
    with torch.no_grad():
        for mem in model.memory:
            mem.W_beta.bias.fill_(-100.0)  # sigmoid(-100) == 0: the memory tokens' writes vanish
    ids = torch.randint(3, 50, (1, model.config.segment_len))
    assert model.read(ids, model.new_state(1)).A.abs().sum() > 0
    with torch.no_grad():
        for mem in model.memory:
            mem.token_gate.zero_()
    assert torch.equal(model.read(ids, model.new_state(1)).A, model.new_state(1).A)


def test_alibi_bias_falls_with_distance_per_head_and_hides_the_future() -> None:
    bias = alibi_bias(4, 5, torch.device("cpu"))
    assert bias.shape == (4, 5, 5)
    assert torch.isinf(bias[:, 0, 1:]).all() and (bias[:, 2, :3] <= 0).all()
    torch.testing.assert_close(bias[:, 4, 0], -4 * torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8]))
    assert (bias.diagonal(dim1=1, dim2=2) == 0).all()


def test_alibi_changes_attention_and_is_saved(tmp_path: Path) -> None:
    ids = torch.randint(3, 50, (1, 8))
    with torch.inference_mode():
        plain, biased = (m.read_segment(ids, m.new_state(1))[0] for m in (random_model(), random_model(alibi=True)))
    assert not torch.allclose(plain, biased)
    random_model(alibi=True).save_pretrained(tmp_path)
    assert ARMTModel.from_pretrained(tmp_path).config.alibi


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


@pytest.mark.parametrize("kw", [{}, {"token_writes": True}], ids=str)
def test_save_pretrained_round_trip_is_exact(tmp_path: Path, kw: dict) -> None:
    model = random_model(seed=5, **kw)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = ARMTModel.from_pretrained(tmp_path / "ckpt").eval()
    strip = lambda d: {k: v for k, v in d.items() if k != "_name_or_path"}  # noqa: E731
    assert strip(loaded.config.to_dict()) == strip(model.config.to_dict())
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
    """Its config.json was written by transformers (keys we ignore); loading it must not import transformers,
    whose import cost most of a `longqa ask` start-up (BENCHMARKS.md)."""
    shipped = Path(__file__).resolve().parent.parent / "weights" / "longqa-armt-small"
    code = ("import sys; from longqa.checkpoint import load_model_dir; "
            f"m, _ = load_model_dir({str(shipped)!r}); print(m.config.n_layers, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(ARMTModel.from_pretrained(shipped).config.n_layers), "False"]
