"""The Associative Recurrent Memory Transformer (ARMT), the whole model in one file (docs/architecture.md).

A document is cut into segments of `segment_len` tokens. Each segment runs through a small causal
transformer with `n_mem` learned memory tokens appended at the end. Every layer l owns an associative
memory (A_l: d_key x d_model, z_l: d_key) that every position reads before the block and that the
memory-token outputs write after it with a delta rule. A and z are the only thing that crosses segments,
so cost per segment and state size are constant in document length.

Names: a `MemoryState` is the (A, z) of every layer for a batch of documents; a `MemoryHead` is one
layer's read and write of it; the memory tokens are the positions whose outputs it writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

ARMT_VERSION = 1  # bump whenever the math changes; checkpoints of other versions are refused
MODEL_TYPE = "longqa-armt"  # config.json's model_type, as transformers' Auto classes look it up (longqa.hf)
# Keys transformers writes into config.json beside the model's own (longqa.hf): not part of the shape.
HF_CONFIG_KEYS = frozenset({"model_type", "architectures", "transformers_version", "dtype", "torch_dtype"})


@dataclass
class ARMTConfig:
    """The model's shape and special tokens, saved as config.json beside the weights. The defaults are the
    shipped model's shape (weights/longqa-armt-small)."""

    vocab_size: int = 4096
    d_model: int = 256
    n_layers: int = 5
    n_heads: int = 4
    d_ff: int = 768
    segment_len: int = 512
    n_mem: int = 16  # memory tokens per segment
    d_mem: int = 128  # memory key size before DPFP; d_key = 6 * d_mem
    conv_width: int = 8  # the causal convolution over token embeddings (CausalConv)
    norm_eps: float = 1e-5
    mem_eps: float = 1e-6
    max_answer_tokens: int = 10
    pad_token_id: int = 0
    gen_token_id: int = 1
    eos_token_id: int = 2
    armt_version: int = ARMT_VERSION

    def __post_init__(self) -> None:
        if self.armt_version != ARMT_VERSION:
            raise ValueError(
                f"checkpoint has armt_version {self.armt_version}, this longqa understands only {ARMT_VERSION}"
            )

    @property
    def d_key(self) -> int:
        return 6 * self.d_mem  # DPFP with nu = 3

    def save_pretrained(self, folder: str | Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        values = {"model_type": MODEL_TYPE, **asdict(self)}
        (Path(folder) / "config.json").write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_dict(cls, values: dict) -> ARMTConfig:
        """A key the config does not know is an error (TypeError), not ignored: it would be a switch this
        code does not implement."""
        return cls(**{k: v for k, v in values.items() if k not in HF_CONFIG_KEYS})

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> ARMTConfig:
        return cls.from_dict(json.loads((Path(folder) / "config.json").read_text()))

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class MemoryState:
    """Every layer's associative memory for a batch of documents, always fp32: A (B, L, d_key, d_model), z (B, L, d_key)."""

    A: torch.Tensor
    z: torch.Tensor

    def clone(self) -> MemoryState:
        return MemoryState(self.A.clone(), self.z.clone())

    def to(self, device: torch.device | str) -> MemoryState:
        return MemoryState(self.A.to(device), self.z.to(device))

    def rows(self, index: torch.Tensor | slice | int) -> MemoryState:
        return MemoryState(self.A[index], self.z[index])

    def detach(self) -> MemoryState:
        return MemoryState(self.A.detach(), self.z.detach())

    @property
    def batch_size(self) -> int:
        return self.A.shape[0]


def dpfp(x: torch.Tensor) -> torch.Tensor:
    """Deterministic parameter-free projection, nu = 3: non-negative features of size 6 * d."""
    r = torch.cat([F.relu(x), F.relu(-x)], dim=-1)
    return torch.cat([r * torch.roll(r, j, dims=-1) for j in (1, 2, 3)], dim=-1)


class MemoryHead(nn.Module):
    """One layer's read and delta-rule write of its associative memory; all arithmetic in fp32."""

    def __init__(self, cfg: ARMTConfig) -> None:
        super().__init__()
        self.eps = cfg.mem_eps
        self.W_Q = nn.Linear(cfg.d_model, cfg.d_mem, bias=False)
        self.W_K = nn.Linear(cfg.d_model, cfg.d_mem, bias=False)
        self.W_V = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.W_beta = nn.Linear(cfg.d_model, 1)
        # The memory tokens' outputs include this layer's read, so a read that grows with A would be written back
        # larger and read back larger still (a memory ran away that way at ~1M tokens: docs/decisions.md). An
        # RMS-normalised read keeps what is written bounded. Its gain starts at 0, so that an untrained memory adds
        # nothing and early training sees a plain transformer.
        self.read_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.read_norm.zero_init = True

    def _lookup(self, phi: torch.Tensor, A: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # An empty memory (A = 0, z = 0) returns exactly 0, so "read only once written" needs no flag.
        return (phi @ A) / ((phi @ z.unsqueeze(-1)) + self.eps)

    def read(self, h: torch.Tensor, A: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(h.device.type, enabled=False):
            phi = dpfp(F.linear(h.float(), self.W_Q.weight.float()))
            r = self._lookup(phi, A, z)
            r = F.rms_norm(r, r.shape[-1:], self.read_norm.weight.float(), self.read_norm.eps)  # 0 stays 0
            return r.to(h.dtype)

    def write(
        self, m: torch.Tensor, A: torch.Tensor, z: torch.Tensor, active: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """New (A, z) after writing the memory-token outputs m (B, M, d); rows with active=False keep theirs."""
        with torch.autocast(m.device.type, enabled=False):
            m = m.float()
            phi_k = dpfp(F.linear(m, self.W_K.weight.float()))  # (B, M, d_key)
            v = F.linear(m, self.W_V.weight.float())  # (B, M, d_model)
            beta = torch.sigmoid(F.linear(m, self.W_beta.weight.float(), self.W_beta.bias.float()))  # (B, M, 1)
            v_old = self._lookup(phi_k, A, z)
            k_norm2 = (phi_k * phi_k).sum(-1, keepdim=True)
            # gamma: the share of this key not yet counted in z, so rewriting a key does not inflate z.
            gamma = (1 - (phi_k @ z.unsqueeze(-1)) / (k_norm2 + self.eps)).clamp(0, 1).detach()
            if active is not None:
                keep = active.to(beta.dtype).view(-1, 1, 1)
                beta, gamma = beta * keep, gamma * keep
            z = z + (gamma * phi_k).sum(1)
            beta = beta * self._gain_cap(phi_k, beta, z)
            A = A + phi_k.transpose(1, 2) @ (beta * (v - v_old))
        return A, z

    def _gain_cap(self, phi_k: torch.Tensor, beta: torch.Tensor, z_new: torch.Tensor) -> torch.Tensor:
        """Factor (B, 1, 1) <= 1 on beta so that one segment's writes cannot overshoot.

        The M writes of a segment land at once. After them, the lookup at written key j moves by
        sum_i G_ji (v_i - v_old_i) with G_ji = beta_i phi_i.phi_j / z'.phi_j. A single key has G <= 1 thanks
        to gamma, but once z is saturated (gamma = 0, after some hundred segments) similar keys written
        together sum to G >> 1: every segment overshoots and A grows without bound. G is similar to a PSD
        matrix, so its eigenvalues are real and >= 0, and its largest row sum bounds them: scaling beta to
        keep that <= 1 keeps the joint step at the written keys no longer than the way to their targets.
        Young memories (the usual G < 1) are left as they are."""
        overlap = phi_k @ phi_k.transpose(1, 2)  # (B, M, M): phi_j . phi_i
        row = (overlap @ beta) / (phi_k @ z_new.unsqueeze(-1) + self.eps)  # (B, M, 1): sum_i G_ji
        return 1 / row.amax(1, keepdim=True).clamp_min(1).detach()


class CausalConv(nn.Module):
    """Causal convolution over the token embeddings of a segment: lets a location token see its subject a few
    tokens back. From-scratch models without it learned only "the last location mentioned"."""

    def __init__(self, cfg: ARMTConfig) -> None:
        super().__init__()
        self.width = cfg.conv_width
        self.conv = nn.Conv1d(cfg.d_model, cfg.d_model, cfg.conv_width)
        self.conv.zero_init = True  # starts as the identity (residual), learns its window

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        x = F.pad(e.transpose(1, 2), (self.width - 1, 0))  # zeros before the segment start
        return e + self.conv(x).transpose(1, 2)


class Block(nn.Module):
    """Pre-norm block: RMSNorm, multi-head SDPA, SwiGLU; positions are learned absolute embeddings that
    restart every segment (ARMTModel.pos)."""

    def __init__(self, cfg: ARMTConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
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
        if mask is None:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        h = h + self.proj(a.transpose(1, 2).reshape(B, T, D))
        gate, up = self.gate_up(self.norm2(h)).chunk(2, dim=-1)
        return h + self.down(F.silu(gate) * up)


def layer_forward(
    block: Block,
    head: MemoryHead,
    h: torch.Tensor,
    A: torch.Tensor,
    z: torch.Tensor,
    mask: torch.Tensor | None,
    write_active: torch.Tensor | None,
    n_mem: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer on one segment: read the layer's memory, run the block, write the memory tokens' outputs
    (n_mem = 0: write nothing). Both schedules run exactly this: segment by segment (ARMTModel.run_layers)
    and all layers at once on successive segments (wavefront.py)."""
    h = h + head.read(h, A, z)
    h = block(h, mask)
    if n_mem:
        A, z = head.write(h[:, -n_mem:], A, z, write_active)
    return h, A, z


# One context segment through the model: (ids, memory, lengths) -> (hidden states, new memory). ARMTModel.context_segment
# is one; training passes a compiled one to read_context.
SegmentStep = Callable[[torch.Tensor, MemoryState, "torch.Tensor | None"], "tuple[torch.Tensor, MemoryState]"]


class ARMTModel(nn.Module):
    def __init__(self, config: ARMTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.conv = CausalConv(c)
        self.pos = nn.Embedding(c.segment_len + c.n_mem, c.d_model)
        self.mem_tokens = nn.Parameter(torch.zeros(c.n_mem, c.d_model))
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.mem_heads = nn.ModuleList(MemoryHead(c) for _ in range(c.n_layers))
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
    def save_pretrained(self, folder: str | Path, dtype: torch.dtype = torch.bfloat16) -> None:
        """config.json and model.safetensors. bf16 by default: the GPU runs the model in bf16 anyway, and a
        paired eval found no loss (docs/decisions.md); fp32 for checkpoints that must resume exactly."""
        self.config.save_pretrained(folder)
        weights = {k: v.detach().to(dtype).cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(weights, Path(folder) / "model.safetensors", metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> ARMTModel:
        """A model saved by save_pretrained, in fp32 and eval mode; every weight must be there, and nothing else."""
        model = cls(ARMTConfig.from_pretrained(folder))
        model.load_state_dict(load_file(Path(folder) / "model.safetensors"))  # copies into the fp32 parameters
        return model.eval()

    # ---- memory ------------------------------------------------------------------------------
    def new_memory(self, batch: int = 1, device: torch.device | str | None = None) -> MemoryState:
        """Empty memories: a document starts with nothing written."""
        c = self.config
        device = device or self.embed.weight.device
        return MemoryState(
            torch.zeros(batch, c.n_layers, c.d_key, c.d_model, device=device),
            torch.zeros(batch, c.n_layers, c.d_key, device=device),
        )

    # ---- forward -----------------------------------------------------------------------------
    def run_layers(
        self, h: torch.Tensor, mask: torch.Tensor | None, memory: MemoryState, write_active: torch.Tensor | None, write: bool
    ) -> tuple[torch.Tensor, MemoryState]:
        """All layers on one segment's input h: the final norm of the outputs, and the memory after writing
        (the same memory when write is False)."""
        A_new, z_new = [], []
        n_mem = self.config.n_mem if write else 0
        for l, (block, head) in enumerate(zip(self.blocks, self.mem_heads)):
            h, A, z = layer_forward(block, head, h, memory.A[:, l], memory.z[:, l], mask, write_active, n_mem)
            A_new.append(A)
            z_new.append(z)
        return self.norm(h), MemoryState(torch.stack(A_new, 1), torch.stack(z_new, 1)) if write else memory

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
        h = torch.cat([self.conv(self.embed(ids)), self.mem_tokens.to(self.embed.weight.dtype).expand(B, -1, -1)], 1)
        return h + self.pos.weight

    def context_segment(
        self, ids: torch.Tensor, memory: MemoryState, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, MemoryState]:
        """One context segment for a batch: ids (B, S) right-padded, lengths (B,) real tokens per row (None: all
        full). Reads the memory, writes the memory tokens' outputs into it. Returns the hidden states of the
        segment positions and the new memory; rows with length 0 keep their memory bit for bit."""
        S = ids.shape[1]
        h = self.segment_input(ids)
        mask = None if lengths is None else self.segment_mask(lengths, h.shape[1])
        h, memory = self.run_layers(h, mask, memory, None if lengths is None else lengths > 0, write=True)
        return h[:, :S], memory

    def read_context(
        self,
        segments: Iterable[tuple[torch.Tensor, torch.Tensor | None]],
        memory: MemoryState,
        step: SegmentStep | None = None,
        on_segment: Callable[[int, torch.Tensor, MemoryState], None] | None = None,
    ) -> MemoryState:
        """The segment loop: each (ids, lengths) through `step` (context_segment, or a compiled copy of it), the
        memory carried from one to the next; returns the memory after the last. on_segment(s, h, memory) sees
        each segment's hidden states and the memory after it (training's losses). Training and eager reading
        run this; the wavefront reader (wavefront.py) matches it (tests)."""
        step = step or self.context_segment
        for s, (ids, lengths) in enumerate(segments):
            h, memory = step(ids, memory, lengths)
            if on_segment:
                on_segment(s, h, memory)
        return memory

    def question_segment(self, ids: torch.Tensor, memory: MemoryState, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """A question (and the answer so far): reads the memory, writes nothing, no memory tokens. Returns hidden states."""
        T = ids.shape[1]
        h = self.conv(self.embed(ids)) + self.pos.weight[:T]
        mask = None
        if lengths is not None:
            i = torch.arange(T, device=ids.device)
            causal = i.view(1, -1) <= i.view(-1, 1)
            mask = (causal.unsqueeze(0) & (i.view(1, 1, -1) < lengths.view(-1, 1, 1))).unsqueeze(1)
        return self.run_layers(h, mask, memory, None, write=False)[0]

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        # Output head tied to the input embedding, in fp32 whatever the model runs in: bf16 logits can tie, and
        # argmax then picks by token index, so two reading paths answered differently (docs/decisions.md).
        return h.float() @ self.embed.weight.float().T

    @torch.inference_mode()
    def answer(self, memory: MemoryState, questions: list[list[int]]) -> list[list[int]]:
        """Greedy answers (token ids, EOS excluded) for one question per memory row.

        Each question (ids ending in GEN) and its answer so far are one question segment."""
        c = self.config
        B = len(questions)
        assert B == memory.batch_size
        seqs = [list(q) for q in questions]
        done = [False] * B
        for _ in range(c.max_answer_tokens):
            if max(map(len, seqs)) >= c.segment_len + c.n_mem:  # the question segment is full: stop there
                break
            lengths = torch.tensor([len(s) for s in seqs], device=memory.A.device)
            T = int(lengths.max())
            ids = torch.full((B, T), c.pad_token_id, dtype=torch.long, device=memory.A.device)
            for b, s in enumerate(seqs):
                ids[b, : len(s)] = torch.tensor(s, device=ids.device)
            h = self.question_segment(ids, memory, lengths)
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


def split_segments(ids: torch.Tensor, lengths: torch.Tensor, segment_len: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """A batch of right-padded rows (B, T), T a multiple of segment_len, as ARMTModel.read_context takes it:
    each segment's ids and its real tokens per row (None where every row fills it)."""
    for s in range(ids.shape[1] // segment_len):
        seg_lengths = (lengths - s * segment_len).clamp(0, segment_len)
        # contiguous: a slice's row stride is the batch's length, and compiled code guards on strides
        seg = ids[:, s * segment_len : (s + 1) * segment_len].contiguous()
        yield seg, None if bool((seg_lengths == segment_len).all()) else seg_lengths
