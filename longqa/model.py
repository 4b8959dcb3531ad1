"""The Associative Recurrent Memory Transformer (ARMT), the whole model in one file.

A document is cut into segments of `segment_len` tokens. Each segment runs through a small causal
transformer with `n_mem` learned memory tokens appended at the end. Every layer l owns an associative
memory (A_l: d_key x d_model, z_l: d_key) that every position reads before the block and that the
memory-token outputs write after it with a delta rule (../shared/armt.md). A and z are the only thing
that crosses segments, so cost per segment and state size are constant in document length.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

ARMT_VERSION = 1  # bump whenever the math changes; checkpoints of other versions are refused
# Config keys that only add parameters, which start so that the model computes what it did without them: a trained
# checkpoint can be grown by them (ARMTModel.grown) and trained on.
GROWABLE = frozenset({"token_writes", "n_layers"})
# Keys that transformers' PreTrainedConfig wrote into config.json (the shipped checkpoint has them): ignored.
# longqa no longer builds on transformers: importing it took 13 of the 20 s a `longqa ask` spent starting on
# the H100 machine (BENCHMARKS.md), for two file formats that json and safetensors write as well.
LEGACY_CONFIG_KEYS = frozenset({"architectures", "dtype", "model_type", "tie_word_embeddings", "transformers_version"})


@dataclass
class ARMTConfig:
    """The model's shape and special tokens, saved as config.json beside the weights (save_pretrained /
    from_pretrained, as Hugging Face models do)."""

    vocab_size: int = 8192
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 1024
    segment_len: int = 128
    n_mem: int = 16
    d_mem: int = 32
    conv_width: int = 6
    conv_depthwise: bool = True
    write_cap: bool = False  # True for checkpoints trained with it (see AssociativeMemory._gain_cap)
    write_clip: list[float] | None = None  # per layer: the largest RMS a written vector keeps (AssociativeMemory.write)
    read_norm: bool = False  # True: a read is RMS-normalised with a learned gain, so it cannot grow with A (AssociativeMemory.read)
    alibi: bool = False  # True: attention scores fall with distance, a slope per head (alibi_bias)
    token_writes: bool = False  # True: every segment token writes too, not only the memory tokens (AssociativeMemory.write)
    norm_eps: float = 1e-5
    mem_eps: float = 1e-6
    max_answer_tokens: int = 10
    pad_token_id: int = 0
    gen_token_id: int = 1
    eos_token_id: int = 2
    armt_version: int = ARMT_VERSION

    def __post_init__(self) -> None:
        if self.write_clip is not None and len(self.write_clip) != self.n_layers:
            raise ValueError(f"write_clip has {len(self.write_clip)} values for {self.n_layers} layers")
        if self.armt_version != ARMT_VERSION:
            raise ValueError(
                f"checkpoint has armt_version {self.armt_version}, this longqa understands only {ARMT_VERSION}"
            )

    @property
    def d_key(self) -> int:
        return 6 * self.d_mem  # DPFP with nu = 3

    def to_dict(self) -> dict:
        return asdict(self)

    def save_pretrained(self, folder: str | Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "config.json").write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> ARMTConfig:
        """The config of a checkpoint folder; a key it does not know is an error (TypeError), not ignored."""
        values = json.loads((Path(folder) / "config.json").read_text())
        return cls(**{k: v for k, v in values.items() if k not in LEGACY_CONFIG_KEYS})


@dataclass
class MemoryState:
    """Per-layer associative memory of a batch of documents, always fp32: A (B, L, d_key, d_model), z (B, L, d_key)."""

    A: torch.Tensor
    z: torch.Tensor

    def clone(self) -> MemoryState:
        return MemoryState(self.A.clone(), self.z.clone())

    def to(self, device: torch.device | str) -> MemoryState:
        return MemoryState(self.A.to(device), self.z.to(device))

    def rows(self, index: torch.Tensor | slice | int) -> MemoryState:
        return MemoryState(self.A[index], self.z[index])

    @property
    def batch_size(self) -> int:
        return self.A.shape[0]


def dpfp(x: torch.Tensor) -> torch.Tensor:
    """Deterministic parameter-free projection, nu = 3: non-negative features of size 6 * d."""
    r = torch.cat([F.relu(x), F.relu(-x)], dim=-1)
    return torch.cat([r * torch.roll(r, j, dims=-1) for j in (1, 2, 3)], dim=-1)


class AssociativeMemory(nn.Module):
    """Read and delta-rule write of one layer's memory; all arithmetic in fp32 (armt.md)."""

    def __init__(self, cfg: ARMTConfig, layer: int = 0) -> None:
        super().__init__()
        self.eps = cfg.mem_eps
        self.write_cap = cfg.write_cap
        self.token_writes = cfg.token_writes
        self.write_clip = cfg.write_clip[layer] if cfg.write_clip else None
        self.W_Q = nn.Linear(cfg.d_model, cfg.d_mem, bias=False)
        self.W_K = nn.Linear(cfg.d_model, cfg.d_mem, bias=False)
        self.W_V = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.W_beta = nn.Linear(cfg.d_model, 1)
        # An untrained memory adds nothing to h, so early training sees a plain transformer: a zero W_V, or with
        # read_norm a zero gain (W_V zero as well would leave both without a gradient).
        # read_norm: the memory tokens' outputs include this layer's read, so a read that grows with A is written
        # back larger and read back larger still: armt-v3's memory ran away that way at ~1M tokens (training/README.md).
        # A normalised read keeps what is written bounded whatever A's size.
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps) if cfg.read_norm else None
        (self.norm if self.norm is not None else self.W_V).zero_init = True
        # token_writes: the 16 memory tokens summed up a 512-token segment in 16 writes, and a room that a fact's own
        # tokens had worked out (where-targets, training/README.md) never reached the object's entry. Each segment token
        # may write its own entry, with its own projections, scaled by a gate that starts at 0: a grown checkpoint
        # computes exactly what it did, and the gate's gradient is there from the first step. Tried on the shipped
        # model (armt-v7-tw): QA3 did not move and QA2 fell.
        if cfg.token_writes:
            self.W_Kt = nn.Linear(cfg.d_model, cfg.d_mem, bias=False)
            self.W_Vt = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
            self.W_betat = nn.Linear(cfg.d_model, 1)
            self.token_gate = nn.Parameter(torch.zeros(()))

    def _lookup(self, phi: torch.Tensor, A: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # An empty memory (A = 0, z = 0) returns exactly 0, so "read only once written" needs no flag.
        return (phi @ A) / ((phi @ z.unsqueeze(-1)) + self.eps)

    def read(self, h: torch.Tensor, A: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(h.device.type, enabled=False):
            phi = dpfp(F.linear(h.float(), self.W_Q.weight.float()))
            r = self._lookup(phi, A, z)
            if self.norm is not None:  # an empty memory still reads exactly 0
                r = F.rms_norm(r, r.shape[-1:], self.norm.weight.float(), self.norm.eps)
            return r.to(h.dtype)

    def _project(
        self, x: torch.Tensor, W_K: nn.Linear, W_V: nn.Linear, W_beta: nn.Linear
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keys' features, values and write strengths (beta) of the vectors x, in fp32."""
        if self.write_clip is not None:
            # The memory tokens' outputs include this layer's own read, so a large read is written back
            # larger and read back larger still: armt-v3's memory crept for ~900 segments of a 1M document,
            # then went NaN within 100. Vectors longer than any seen in training are scaled down to that.
            # It keeps such a memory finite; it did not keep v3's answers (training/README.md).
            rms = x.pow(2).mean(-1, keepdim=True).sqrt()
            x = x * (self.write_clip / (rms + self.eps)).clamp(max=1)
        phi_k = dpfp(F.linear(x, W_K.weight.float()))  # (B, N, d_key)
        v = F.linear(x, W_V.weight.float())  # (B, N, d_model)
        beta = torch.sigmoid(F.linear(x, W_beta.weight.float(), W_beta.bias.float()))  # (B, N, 1)
        return phi_k, v, beta

    def write(
        self,
        m: torch.Tensor,
        A: torch.Tensor,
        z: torch.Tensor,
        active: torch.Tensor | None,
        tokens: torch.Tensor | None = None,
        token_ok: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """New (A, z) after writing the memory-token outputs m (B, M, d), and with token_writes the segment tokens'
        outputs (B, S, d) where token_ok (B, S) allows (None: all); rows with active=False keep theirs."""
        with torch.autocast(m.device.type, enabled=False):
            phi_k, v, beta = self._project(m.float(), self.W_K, self.W_V, self.W_beta)
            counted = None  # token writes: how much of each key z counts beside gamma, as far as the gate is open
            if tokens is not None:
                phi_t, v_t, beta_t = self._project(tokens.float(), self.W_Kt, self.W_Vt, self.W_betat)
                share = self.token_gate.float()
                if token_ok is not None:
                    share = share * token_ok.to(beta_t.dtype).unsqueeze(-1)
                counted = torch.cat([torch.ones_like(beta), (share * torch.ones_like(beta_t)).clamp(0, 1).detach()], 1)
                phi_k, v = torch.cat([phi_k, phi_t], 1), torch.cat([v, v_t], 1)
                beta = torch.cat([beta, beta_t * share], 1)
            v_old = self._lookup(phi_k, A, z)
            k_norm2 = (phi_k * phi_k).sum(-1, keepdim=True)
            # gamma: the share of this key not yet counted in z, so rewriting a key does not inflate z.
            gamma = (1 - (phi_k @ z.unsqueeze(-1)) / (k_norm2 + self.eps)).clamp(0, 1).detach()
            if counted is not None:
                gamma = gamma * counted
            if active is not None:
                keep = active.to(beta.dtype).view(-1, 1, 1)
                beta, gamma = beta * keep, gamma * keep
            z = z + (gamma * phi_k).sum(1)
            if self.write_cap:
                beta = beta * self._gain_cap(phi_k, beta, z, counted)
            A = A + phi_k.transpose(1, 2) @ (beta * (v - v_old))
        return A, z

    def _gain_cap(
        self, phi_k: torch.Tensor, beta: torch.Tensor, z_new: torch.Tensor, weight: torch.Tensor | None
    ) -> torch.Tensor:
        """Factor (B, 1, 1) <= 1 on beta so that this segment's writes cannot overshoot.

        The M writes of a segment land at once. After them, the lookup at written key j moves by
        sum_i G_ji (v_i - v_old_i) with G_ji = beta_i phi_i.phi_j / z'.phi_j. A single key has G <= 1 thanks
        to gamma, but once z is saturated (gamma = 0, after some hundred segments) similar keys written
        together sum to G >> 1: every segment overshoots and A grows without bound (inf after ~100
        segments of bAbI facts in an old memory). G is similar to a PSD matrix, so its eigenvalues are real
        and >= 0, and its largest row sum bounds them: scaling beta to keep that <= 1 keeps the joint
        step at the written keys no longer than the way to their targets. Young memories (the usual
        G < 1) are left as they are.

        weight (B, M, 1), with token writes, scales each row: a token's counts as far as its gate has opened, so that a
        closed gate leaves the cap (and the model) as it was."""
        overlap = phi_k @ phi_k.transpose(1, 2)  # (B, M, M): phi_j . phi_i
        row = (overlap @ beta) / (phi_k @ z_new.unsqueeze(-1) + self.eps)  # (B, M, 1): sum_i G_ji
        if weight is not None:
            row = row * weight
        return 1 / row.amax(1, keepdim=True).clamp_min(1).detach()


class CausalConv(nn.Module):
    """Depthwise causal conv over token embeddings: lets a location token see its subject a few tokens back.

    From-scratch models without it learned only "the last location mentioned" (lab notes). Depthwise is
    enough in principle; a full conv breaks that plateau about 6x sooner, which matters on a short budget."""

    def __init__(self, cfg: ARMTConfig) -> None:
        super().__init__()
        self.width = cfg.conv_width
        groups = cfg.d_model if cfg.conv_depthwise else 1
        self.conv = nn.Conv1d(cfg.d_model, cfg.d_model, cfg.conv_width, groups=groups)
        self.conv.zero_init = True  # starts as the identity (residual), learns its window

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        x = F.pad(e.transpose(1, 2), (self.width - 1, 0))  # zeros before the segment start
        return e + self.conv(x).transpose(1, 2)


def alibi_bias(n_heads: int, T: int, device: torch.device) -> torch.Tensor:
    """(H, T, T) causal attention bias of ALiBi (Press et al. 2022): head h's score falls by 2^(-8h/H) per token
    of distance, -inf ahead. A prior for "the latest fact about X", which every bAbI task asks for. The shipped
    model, without it, places a dropped object right 27 % of the time once its dropper has moved on
    (training/qa2_cases.py). armt-v6 tried it; its QA2 fell (training/README.md)."""
    slopes = 2.0 ** (-8.0 * torch.arange(1, n_heads + 1, device=device) / n_heads)
    i = torch.arange(T, device=device)
    dist = (i.view(-1, 1) - i.view(1, -1)).float()
    return (-slopes.view(-1, 1, 1) * dist).masked_fill(dist < 0, float("-inf"))


class Block(nn.Module):
    """Pre-norm block: RMSNorm, multi-head SDPA, SwiGLU. The small modern block trains stably from scratch;
    positions are learned absolute embeddings (restarting every segment), as in the lab-notes runs, with
    ALiBi's recency bias on top where the config asks for it."""

    def __init__(self, cfg: ARMTConfig) -> None:
        super().__init__()
        self.n_heads, self.alibi = cfg.n_heads, cfg.alibi
        self.norm1 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.norm2 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.gate_up = nn.Linear(cfg.d_model, 2 * cfg.d_ff, bias=False)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, D = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(B, T, 3, self.n_heads, D // self.n_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if self.alibi:
            bias = alibi_bias(self.n_heads, T, h.device).to(q.dtype)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias if mask is None else bias.masked_fill(~mask, float("-inf")))
        elif mask is None:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        h = h + self.proj(a.transpose(1, 2).reshape(B, T, D))
        gate, up = self.gate_up(self.norm2(h)).chunk(2, dim=-1)
        return h + self.down(F.silu(gate) * up)


def layer_forward(
    block: Block,
    mem: AssociativeMemory,
    h: torch.Tensor,
    A: torch.Tensor,
    z: torch.Tensor,
    mask: torch.Tensor | None,
    write_active: torch.Tensor | None,
    n_mem: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer on one segment: read the layer's memory, run the block, write the memory tokens' outputs
    (n_mem = 0: write nothing), and with token_writes the segment tokens' that the mask does not hide. Both
    schedules run exactly this: segment by segment (ARMTModel.run_layers) and all layers at once on successive
    segments (wavefront.py)."""
    h = h + mem.read(h, A, z)
    h = block(h, mask)
    if n_mem:
        tokens = token_ok = None
        if mem.token_writes:
            tokens = h[:, :-n_mem]
            # The last memory token sees every real token of its row and no padding (segment_mask).
            token_ok = None if mask is None else mask[:, 0, -1, :-n_mem]
        A, z = mem.write(h[:, -n_mem:], A, z, write_active, tokens, token_ok)
    return h, A, z


class ARMTModel(nn.Module):
    def __init__(self, config: ARMTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.conv = CausalConv(c)
        self.pos = nn.Embedding(c.segment_len + c.n_mem, c.d_model)
        self.mem_tokens = nn.Parameter(torch.zeros(c.n_mem, c.d_model))
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.memory = nn.ModuleList(AssociativeMemory(c, l) for l in range(c.n_layers))
        self.norm = nn.RMSNorm(c.d_model, eps=c.norm_eps)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv1d)):
            if getattr(module, "zero_init", False):
                nn.init.zeros_(module.weight)
            else:
                nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.RMSNorm):
            (nn.init.zeros_ if getattr(module, "zero_init", False) else nn.init.ones_)(module.weight)
        elif isinstance(module, ARMTModel):
            nn.init.normal_(module.mem_tokens, std=0.02)

    # ---- files -------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> None:
        """config.json and model.safetensors (fp32 as trained, whatever dtype the model runs in)."""
        self.config.save_pretrained(folder)
        weights = {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(weights, Path(folder) / "model.safetensors", metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> ARMTModel:
        """A model saved by save_pretrained, in eval mode; every weight must be there, and nothing else."""
        model = cls(ARMTConfig.from_pretrained(folder))
        model.load_state_dict(load_file(Path(folder) / "model.safetensors"))
        return model.eval()

    def grown(self, **changes) -> ARMTModel:
        """This model with GROWABLE config changes: its weights, plus new parameters that start so that the new
        model computes exactly what this one does."""
        if not set(changes) <= GROWABLE:
            raise ValueError(f"only {sorted(GROWABLE)} can be added to a trained model, not {sorted(set(changes) - GROWABLE)}")
        L = self.config.n_layers
        if changes.get("n_layers", L) != L and (changes["n_layers"] < L or self.config.write_clip is not None):
            raise ValueError(f"n_layers can only grow from {L}, and not with a write clip (one value per layer)")
        model = ARMTModel(replace(self.config, **changes)).to(self.embed.weight)
        unexpected = model.load_state_dict(self.state_dict(), strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"{sorted(changes)} would drop weights: {unexpected}")
        with torch.no_grad():  # added layers on top pass h through: zero output projections, and their memories
            for block in model.blocks[L:]:  # read 0 (a zero read gain or W_V, as in any fresh model)
                block.proj.weight.zero_()
                block.down.weight.zero_()
        if changes.get("token_writes") and not self.config.token_writes:
            # Token writes start as copies of the memory tokens' projections: keys in the space that the trained
            # queries read, values of a trained size. At random (std 0.02) the DPFP keys were ~1e-4 of those.
            with torch.no_grad():
                for mem in model.memory:
                    for new, old in ((mem.W_Kt, mem.W_K), (mem.W_Vt, mem.W_V), (mem.W_betat, mem.W_beta)):
                        new.load_state_dict(old.state_dict())
        return model.train(self.training)

    def set_write_cap(self, on: bool) -> None:
        """Switch the write cap (AssociativeMemory._gain_cap) on or off; saved with the config."""
        self.config.write_cap = on
        for mem in self.memory:
            mem.write_cap = on

    # ---- state -------------------------------------------------------------------------------
    def new_state(self, batch: int = 1, device: torch.device | str | None = None) -> MemoryState:
        c = self.config
        device = device or self.embed.weight.device
        return MemoryState(
            torch.zeros(batch, c.n_layers, c.d_key, c.d_model, device=device),
            torch.zeros(batch, c.n_layers, c.d_key, device=device),
        )

    # ---- forward -----------------------------------------------------------------------------
    def run_layers(
        self,
        h: torch.Tensor,
        mask: torch.Tensor | None,
        state: MemoryState,
        write_active: torch.Tensor | None,
        write: bool,
        tap: int | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """All layers on one segment's input h; the final norm of the outputs and the written state. With tap,
        a third item: layer `tap`'s output (0-based) under the final norm, where training's where-targets may
        be scored (Stage.where_layer), so that the later layers' memory tokens can see what they ask for."""
        A_new, z_new, tapped = [], [], []
        n_mem = self.config.n_mem if write else 0
        for l, (block, mem) in enumerate(zip(self.blocks, self.memory)):
            h, A, z = layer_forward(block, mem, h, state.A[:, l], state.z[:, l], mask, write_active, n_mem)
            A_new.append(A)
            z_new.append(z)
            if l == tap:
                tapped.append(self.norm(h))
        new_state = MemoryState(torch.stack(A_new, 1), torch.stack(z_new, 1)) if write else state
        return self.norm(h), new_state, *tapped

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.conv(self.embed(ids))

    def segment_mask(self, lengths: torch.Tensor, T: int) -> torch.Tensor:
        """Causal mask over [segment (padded to S); memory] that hides the padding keys of each row."""
        S = self.config.segment_len
        i = torch.arange(T, device=lengths.device)
        causal = i.view(1, -1) <= i.view(-1, 1)
        key_ok = (i.view(1, -1) < lengths.view(-1, 1)) | (i.view(1, -1) >= S)
        return (causal.unsqueeze(0) & key_ok.unsqueeze(1)).unsqueeze(1)

    def segment_input(self, ids: torch.Tensor) -> torch.Tensor:
        """The first layer's input for full context segments ids (B, S): embeddings, memory tokens, positions."""
        B, S = ids.shape
        assert S == self.config.segment_len, f"segments must be padded to {self.config.segment_len}"
        h = torch.cat([self._embed(ids), self.mem_tokens.to(self.embed.weight.dtype).expand(B, -1, -1)], 1)
        return h + self.pos.weight

    def read_segment(
        self, ids: torch.Tensor, state: MemoryState, lengths: torch.Tensor | None = None, tap: int | None = None
    ) -> tuple[torch.Tensor, ...]:
        """One context segment for a batch: ids (B, S) right-padded, lengths (B,) real tokens per row
        (None: all full). Returns the hidden states of the segment positions and the written state, and with
        tap those of layer `tap` (run_layers). Rows with length 0 leave their memory untouched."""
        S = ids.shape[1]
        h = self.segment_input(ids)
        full = lengths is None
        mask = None if full else self.segment_mask(lengths, h.shape[1])
        active = None if full else lengths > 0
        h, state, *tapped = self.run_layers(h, mask, state, active, write=True, tap=tap)
        return h[:, :S], state, *(t[:, :S] for t in tapped)

    def read_only(
        self, ids: torch.Tensor, state: MemoryState, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The final question segment: reads memory, writes nothing, no memory tokens. Returns hidden states."""
        T = ids.shape[1]
        h = self._embed(ids) + self.pos.weight[:T]
        mask = None
        if lengths is not None:
            i = torch.arange(T, device=ids.device)
            causal = i.view(1, -1) <= i.view(-1, 1)
            mask = (causal.unsqueeze(0) & (i.view(1, 1, -1) < lengths.view(-1, 1, 1))).unsqueeze(1)
        return self.run_layers(h, mask, state, None, write=False)[0]

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        # Output head tied to the input embedding, in fp32 (under autocast, training's, bf16 all the same). A bf16
        # model's bf16 logits tie: one answer's top two were equal in bf16 on the GPU, and argmax then picks by
        # token index, so the fast and plain paths answered differently (BENCHMARKS.md).
        return h.float() @ self.embed.weight.float().T

    @torch.inference_mode()
    def read(self, segment_ids: torch.Tensor, state: MemoryState, lengths: torch.Tensor | None = None) -> MemoryState:
        """Public API: write one segment per row into `state`; returns the new state."""
        return self.read_segment(segment_ids, state, lengths)[1]

    @torch.inference_mode()
    def answer(self, state: MemoryState, questions: list[list[int]]) -> list[list[int]]:
        """Greedy answers (token ids, EOS excluded) for one question per state row.

        Each question (ids ending in GEN) is a final segment that only reads memory."""
        c = self.config
        B = len(questions)
        assert B == state.batch_size
        seqs = [list(q) for q in questions]
        done = [False] * B
        for _ in range(c.max_answer_tokens):
            if max(map(len, seqs)) >= c.segment_len + c.n_mem:  # the final segment is full: stop there
                break
            lengths = torch.tensor([len(s) for s in seqs], device=state.A.device)
            T = int(lengths.max())
            ids = torch.full((B, T), c.pad_token_id, dtype=torch.long, device=state.A.device)
            for b, s in enumerate(seqs):
                ids[b, : len(s)] = torch.tensor(s, device=ids.device)
            h = self.read_only(ids, state, lengths)
            last = h[torch.arange(B, device=h.device), lengths - 1]
            nxt = self.logits(last).argmax(-1).tolist()
            for b in range(B):
                if not done[b]:
                    seqs[b].append(nxt[b])
                    done[b] = nxt[b] == c.eos_token_id
            if all(done):
                break
        out = []
        for q, s in zip(questions, seqs):
            a = s[len(q) :]
            out.append(a[: a.index(c.eos_token_id)] if c.eos_token_id in a else a)
        return out
