"""Wavefront reading: in one step, every layer l works on segment t - l.

Nothing crosses segments in ARMT but each layer's own memory. Layer l on segment t needs layer l-1's
output on segment t and its own memory after segment t-1, and both are ready one step earlier. So one
step can run all L layers at once, each on another segment, as batched products over the layers'
stacked weights (torch.func: stack_module_state + vmap of model.layer_forward). A step launches the
kernels of one layer, not L, and on a GPU a segment's cost is mostly launches (BENCHMARKS.md). The
arithmetic is the model's own, layer by layer; only the kernels that carry it out differ. This is the
"diagonal batching" of Sivtsov et al. (2025).

A run of n segments takes n + L - 1 steps: the pipeline fills during the first L - 1 and drains after
the last segment. A layer without a segment in a step computes on left-over input and writes nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from longqa.model import ARMTModel, Block, MemoryHead, MemoryState, layer_forward


@contextmanager
def matmul_precision(level: str) -> Iterator[None]:
    """torch.set_float32_matmul_precision(level) inside the block only."""
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(level)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


class _Layer(nn.Module):
    """One block with its memory, the unit that is stacked L times."""

    def __init__(self, block: Block, head: MemoryHead, n_mem: int) -> None:
        super().__init__()
        self.block, self.head, self.n_mem = block, head, n_mem

    def forward(
        self, h: torch.Tensor, A: torch.Tensor, z: torch.Tensor, active: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return layer_forward(self.block, self.head, h, A, z, None, active, self.n_mem)


class WavefrontReader:
    """Reads full segments of `batch` documents in steps on fixed buffers, so that a step can be captured once
    as a CUDA graph and replayed: one launch per step. compile=True puts the step through torch.compile
    first (on its first run), which fuses its element-wise work into fewer kernels.

    diagonal=True: wavefront steps, L layers on L segments. diagonal=False: one segment through all layers
    per step. For one or a few documents a step is mostly launches, and the wavefront makes a segment cost
    about one layer's; uncompiled, with many documents the GPU is busy anyway and the layer-by-layer step,
    which moves less data, is faster. Compiled (fused element-wise work), the wavefront step is faster at
    every batch size (BENCHMARKS.md)."""

    def __init__(
        self, model: ARMTModel, batch: int, diagonal: bool = True, compile: bool = False, tf32: bool = True
    ) -> None:
        c = model.config
        dev, dtype = model.embed.weight.device, model.embed.weight.dtype
        self.model, self.S, self.diagonal = model, c.segment_len, diagonal
        self.depth = c.n_layers if diagonal else 1  # steps a segment spends in the pipeline
        if diagonal:  # all layers as one: their weights stacked (copies, L x each), layer_forward vmapped
            layers = [_Layer(b, m, c.n_mem) for b, m in zip(model.blocks, model.mem_heads)]
            with torch.no_grad():
                params, buffers = stack_module_state(layers)
            self.weights = ({k: v.detach() for k, v in params.items()}, buffers)
            template = copy.deepcopy(layers[0]).to("meta")
            self.layers = torch.vmap(lambda w, h, A, z, active: functional_call(template, w, (h, A, z, active)))
        L, T = c.n_layers, c.segment_len + c.n_mem
        self.ids = torch.full((batch, c.segment_len + 1), c.pad_token_id, device=dev)  # + the "has a segment" column
        self.ids[:, -1] = 0
        # Every layer's input for the step: the first layer's is the new segment, layer l's what layer l-1 put
        # out one step before (layer by layer, only the first). Which layers hold a real segment: a layer
        # without one writes nothing. State is layer-major: A (L, B, d_key, d), z (L, B, d_key).
        self.x = torch.zeros(self.depth, batch, T, c.d_model, device=dev, dtype=dtype)
        self.active = torch.zeros(self.depth, batch, dtype=torch.bool, device=dev)
        self.A = torch.zeros(L, batch, c.d_key, c.d_model, device=dev)
        self.z = torch.zeros(L, batch, c.d_key, device=dev)
        self.tf32 = tf32
        self._fn = torch.compile(self._advance, dynamic=False) if compile else self._advance
        self.graph: torch.cuda.CUDAGraph | None = None

    def _advance(self, ids: torch.Tensor, x: torch.Tensor, A: torch.Tensor, z: torch.Tensor, active: torch.Tensor) -> None:
        # Updates the buffers in place: compiled, the kernels that compute them write there, and no copy follows.
        active.copy_(torch.cat([ids[None, :, self.S].bool(), active[:-1]]))
        x[0] = self.model.segment_input(ids[:, : self.S])
        if self.diagonal:
            h, A_new, z_new = self.layers(self.weights, x, A, z, active)
            x[1:] = h[:-1]
        else:
            state = MemoryState(A.transpose(0, 1), z.transpose(0, 1))
            new = self.model.run_layers(x[0], None, state, active[0], write=True)[1]
            A_new, z_new = new.A.transpose(0, 1), new.z.transpose(0, 1)
        A.copy_(A_new)
        z.copy_(z_new)

    def _step(self) -> None:
        self._fn(self.ids, self.x, self.A, self.z, self.active)

    def capture(self) -> None:
        # tf32: the memory's fp32 products run on tensor cores (A and z stay fp32): the step takes 0.86 of the
        # time (BENCHMARKS.md). Compiling and capturing fix the kernels, so the setting holds for every replay.
        with matmul_precision("high" if self.tf32 else "highest"):
            self._capture()

    def _capture(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (and compilation) off the capture; the flags are 0: no writes
            for _ in range(3):
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step()
        self.graph = graph

    def load(self, state: MemoryState) -> None:
        """Start a run from `state` (batch-major, as MemoryState keeps it) with an empty pipeline."""
        self.A.copy_(state.A.transpose(0, 1))
        self.z.copy_(state.z.transpose(0, 1))
        self.active.zero_()

    def state(self) -> MemoryState:
        """The memories after a drained run, batch-major and owned by the caller."""
        return MemoryState(
            self.A.transpose(0, 1).clone(memory_format=torch.contiguous_format),
            self.z.transpose(0, 1).clone(memory_format=torch.contiguous_format),
        )

    def run(self, ids: torch.Tensor) -> None:
        """One step; ids (batch, S + 1) as schedule() makes them."""
        self.ids.copy_(ids, non_blocking=True)
        if self.graph:
            self.graph.replay()
        else:
            self._step()


def schedule(
    steps: Iterator[tuple[list[int], list[np.ndarray]]], batch: int, depth: int, pad_id: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """(tokens, ids) per reader step from engine.lockstep's steps, then depth - 1 empty steps that drain
    the pipeline (WavefrontReader.depth). ids (batch, S + 1) int64: the rows' segments (padding where a row
    has none) and a last column that flags the rows that have one, so that one copy carries both."""
    # Pinned, so that the copy to the GPU is asynchronous. pin_memory() takes its block from torch's caching
    # host allocator, which hands a block out again only after the non-blocking copies recorded on it have
    # completed: no allocation per step, and the producer never overwrites ids that a copy still reads.
    pin = torch.cuda.is_available()
    S = None
    for rows, segments in steps:
        S = len(segments[0])
        ids = np.empty((batch, S + 1), dtype=np.int64)
        if len(rows) == batch:
            np.stack(segments, out=ids[:, :S])
            ids[:, S] = 1
        else:
            ids[:, :S], ids[:, S] = pad_id, 0
            ids[rows, :S], ids[rows, S] = np.stack(segments), 1
        t = torch.from_numpy(ids)
        yield len(rows) * S, t.pin_memory() if pin else t
    if S is not None:
        empty = torch.full((batch, S + 1), pad_id, dtype=torch.int64)
        empty[:, S] = 0
        for _ in range(depth - 1):
            yield 0, empty
