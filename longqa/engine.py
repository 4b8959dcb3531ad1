"""The library behind the CLI: load a checkpoint, read documents into memories, answer questions.

Documents are read in lockstep, one segment per document per step, so many documents share each forward
pass (`ask --each`, `eval`); a single document is the batch-of-one case of the same code.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.nn.attention import SDPBackend, sdpa_kernel

from longqa.checkpoint import fingerprint, load_model_dir
from longqa.device import resolve_device
from longqa.errors import InputError
from longqa.input.reader import Document, Progress, token_stream
from longqa.input.segments import Segmenter, lockstep
from longqa.input.text import decode, question_ids
from longqa.memory_file import Memory
from longqa.model import ARMTConfig, ARMTModel, MemoryState
from longqa.wavefront import WavefrontReader, schedule

ANSWER_BATCH = 256
WAVEFRONT_MAX_BATCH = 32  # uncompiled, above it the GPU is busy anyway and layer-by-layer steps are faster (BENCHMARKS.md)
# Answering uses every attention backend but cuDNN's, which plans anew for each shape it meets: a question's
# length and each answer token are new shapes, and a fresh process took 2.6 s instead of 0.17 s to answer
# (BENCHMARKS.md). Reading keeps torch's choice: its graphed step has one shape, planned once at capture.
ATTENTION_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def prefetch(items: Iterator, depth: int = 16) -> Iterator:
    """Run a producer iterator in a background thread; its exceptions are raised here, in order."""
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as e:  # handed to the consumer, which re-raises it
            q.put((done, e))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        # Wait for the producer to leave native code (tokenizer, torch): a process that exits while a
        # thread is inside it aborts ("terminate called without an active exception") instead of
        # exiting with our code. The timeout covers a producer blocked on a slow pipe.
        stop.set()
        thread.join(timeout=10)


class Engine:
    def __init__(self, model_dir: str | Path, device: str = "auto", use_graphs: bool = True, compile: bool = False) -> None:
        model, tokenizer = load_model_dir(model_dir)
        self._setup(model, tokenizer, fingerprint(model_dir), resolve_device(device), use_graphs, compile)

    @classmethod
    def from_model(cls, model: ARMTModel, tokenizer: Tokenizer, device: str = "auto", use_graphs: bool = True) -> Engine:
        """An engine around a model in memory (benchmarks of other shapes); its states carry no fingerprint."""
        engine = cls.__new__(cls)
        engine._setup(model, tokenizer, "", resolve_device(device), use_graphs, False)
        return engine

    def _setup(
        self, model: ARMTModel, tokenizer: Tokenizer, fp: str, device: torch.device, use_graphs: bool, compile: bool
    ) -> None:
        self.device, self.tokenizer, self.fingerprint = device, tokenizer, fp
        # bf16 on GPU for speed; fp32 on CPU where bf16 is slow. The memory state is fp32 either way.
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.model = model.to(device, dtype).eval()
        self.config: ARMTConfig = model.config
        self.use_graphs = use_graphs
        self.compile = compile
        self._readers: dict[int, WavefrontReader | None] = {}
        if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            # Leave one core to the tokenizer thread that runs beside the model.
            torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))

    # ---- reading -----------------------------------------------------------------------------
    def new_memory(self) -> Memory:
        """An empty memory: a text read from its start, so every name it mentions will be seen (Memory.mentions)."""
        return Memory(self.model.new_memory(1, self.device), mentions=set())

    def _segments(self, memory: Memory, ids: Iterable[list[int]]) -> Iterator[np.ndarray]:
        seg = Segmenter(self.config.segment_len, memory.pending)
        for piece in ids:
            memory.tokens += len(piece)
            yield from seg.push(piece)
        memory.pending = seg.pending

    def _doc_ids(self, memory: Memory, docs: list[Document], progress: Progress | None) -> Iterator[list[int]]:
        for doc in docs:
            yield from token_stream(self.tokenizer, doc, progress)
            memory.sources.append(doc.name)
            if memory.mentions is not None:
                memory.mentions |= doc.stats.mentions.found

    def read(
        self,
        memories: list[Memory],
        docs: list[list[Document]],
        progress: Progress | None = None,
        on_tokens: Callable[[int], None] | None = None,
    ) -> None:
        """Read docs[i] (in order) into memories[i]."""
        self.read_ids(memories, [self._doc_ids(m, d, progress) for m, d in zip(memories, docs)], on_tokens)

    @torch.inference_mode()
    def read_ids(
        self,
        memories: list[Memory],
        ids: list[Iterable[list[int]]],
        on_tokens: Callable[[int], None] | None = None,
    ) -> None:
        """Read token-id streams into memories, all rows in lockstep, one segment per row per step.

        Tokenising runs in a background thread (the tokenizer releases the GIL) while the device reads
        the previous segments. On a GPU every step is one replay of a CUDA graph of a wavefront step
        (wavefront.py); elsewhere the model reads segment by segment."""
        B = len(memories)
        streams = [self._segments(m, i) for m, i in zip(memories, ids)]
        state = MemoryState(
            torch.cat([m.state.A for m in memories]).to(self.device),
            torch.cat([m.state.z for m in memories]).to(self.device),
        )
        reader = self._reader(B) if self.use_graphs else None
        steps = prefetch(schedule(lockstep(streams), B, reader.depth if reader else 1, self.config.pad_token_id))
        if reader:
            reader.load(state)
            for n, step_ids in steps:
                reader.run(step_ids)
                if on_tokens and n:
                    on_tokens(n)
            state = reader.state()
        else:
            state = self.model.read_context(self._eager_segments(steps, on_tokens), state)
        for i, m in enumerate(memories):
            m.state = state.rows(slice(i, i + 1)).clone()

    def _eager_segments(
        self, steps: Iterator[tuple[int, torch.Tensor]], on_tokens: Callable[[int], None] | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """schedule()'s steps as ARMTModel.read_context takes them: a row without a segment has length 0, so
        that its memory stays as it is."""
        S = self.config.segment_len
        for n, ids in steps:
            has = ids[:, S].to(self.device).bool()
            yield ids[:, :S].to(self.device), None if bool(has.all()) else has.long() * S
            if on_tokens and n:
                on_tokens(n)

    def _reader(self, batch: int) -> WavefrontReader | None:
        """The CUDA-graphed wavefront reader for this batch size, made once; None off CUDA or if it cannot be had."""
        if self.device.type != "cuda":
            return None
        if batch not in self._readers:
            self._readers[batch] = None
            # Compiled, the wavefront step is the faster one at every batch size; eager, only up to
            # WAVEFRONT_MAX_BATCH (BENCHMARKS.md). A failed compile costs speed, never answers: fall back to
            # the plain graph, then to eager reading.
            tries = [(True, True)] if self.compile else []
            for compile, diagonal in tries + [(False, batch <= WAVEFRONT_MAX_BATCH)]:
                reader = WavefrontReader(self.model, batch, diagonal, compile)
                try:
                    with torch.inference_mode():  # compiling the vmap outside it fails (TypeError, torch 2.11)
                        reader.capture()
                except Exception as e:
                    what = "compiled CUDA graph" if compile else "CUDA graph"
                    print(f"longqa: warning: {what} for batch {batch} unavailable ({type(e).__name__}); "
                          f"{'trying without compiling' if compile else 'reading eagerly'}", file=sys.stderr)
                    continue
                self._readers[batch] = reader
                break
        return self._readers[batch]

    def _flushed(self, memory: Memory) -> MemoryState:
        """The state after also reading the unfinished last segment (padded), which ask needs before answering.
        The memory itself keeps those tokens pending, so that more text can still be appended exactly."""
        state = memory.state.to(self.device)
        if not memory.pending:
            return state
        S = self.config.segment_len
        ids = torch.full((1, S), self.config.pad_token_id, device=self.device)
        ids[0, : len(memory.pending)] = torch.tensor(memory.pending, device=self.device)
        return self.model.context_segment(ids, state, torch.tensor([len(memory.pending)], device=self.device))[1]

    # ---- answering ---------------------------------------------------------------------------
    def answer(self, memories: list[Memory], questions: list[str]) -> list[list[str]]:
        """answers[d][q] for every memory d and question q."""
        flat = self.answer_pairs([(m, q) for m in memories for q in questions])
        n = len(questions)
        return [flat[d * n : (d + 1) * n] for d in range(len(memories))]

    @torch.inference_mode()
    def answer_pairs(self, pairs: list[tuple[Memory, str]]) -> list[str]:
        """One answer per (memory, question) pair, many pairs per forward."""
        qids = {q: question_ids(self.tokenizer, q) for _, q in pairs}
        # The question and its answer share one read-only segment of segment_len + n_mem positions.
        limit = self.config.segment_len + self.config.n_mem - 1
        for ids in qids.values():
            if len(ids) > limit:
                raise InputError(f"question too long: {len(ids)} tokens, this model takes at most {limit}")
        with sdpa_kernel(ATTENTION_BACKENDS):  # the flush and every answer token: shapes that vary
            flushed: dict[int, MemoryState] = {}
            for m, _ in pairs:
                if id(m) not in flushed:
                    flushed[id(m)] = self._flushed(m)
            out: list[str] = []
            for start in range(0, len(pairs), ANSWER_BATCH):
                chunk = pairs[start : start + ANSWER_BATCH]
                state = MemoryState(
                    torch.cat([flushed[id(m)].A for m, _ in chunk]), torch.cat([flushed[id(m)].z for m, _ in chunk])
                )
                out += [decode(self.tokenizer, ids) for ids in self.model.answer(state, [qids[q] for _, q in chunk])]
        return out
