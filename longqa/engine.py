"""The library behind the CLI: load a checkpoint, read documents into memories, answer questions.

Documents are read in lockstep, one segment per document per step, so many documents share each forward
pass (`ask --each`, `eval`); a single document is the batch-of-one case of the same code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from tokenizers import Tokenizer

from .errors import InputError
from .model import ARMTConfig, ARMTModel, MemoryState
from .reader import Document, Progress, Segmenter, token_stream
from .state import Memory
from .text import question_ids
from .tokenizer import decode, load_tokenizer

MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")
ANSWER_BATCH = 256


def fingerprint(model_dir: str | Path) -> str:
    """Identity of a model + tokenizer: states written by one are refused by any other."""
    h = hashlib.sha256()
    for name in MODEL_FILES:
        with open(Path(model_dir) / name, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()[:16]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: no CUDA GPU is available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise InputError(f"unsupported device '{name}' (use auto, cpu, cuda or cuda:N)")
    return device


def load_checkpoint(model_dir: str | Path) -> tuple[ARMTModel, Tokenizer]:
    """Model and tokenizer from a directory written by save_checkpoint; InputError if it is not one."""
    d = Path(model_dir)
    if not d.is_dir():
        raise InputError(f"model directory not found: {d}")
    missing = [n for n in MODEL_FILES if not (d / n).is_file()]
    if missing:
        raise InputError(f"{d} is not a longqa model directory (missing {', '.join(missing)})")
    try:
        config = ARMTConfig.from_pretrained(d)
        model = ARMTModel.from_pretrained(d, config=config)
        tokenizer = load_tokenizer(d / "tokenizer.json")
    except Exception as e:  # transformers/safetensors/tokenizers each raise their own types
        raise InputError(f"cannot load model from {d}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return model, tokenizer


def save_checkpoint(model: ARMTModel, tokenizer: Tokenizer, model_dir: str | Path) -> None:
    model.save_pretrained(model_dir)
    tokenizer.save(str(Path(model_dir) / "tokenizer.json"))


class Engine:
    def __init__(self, model_dir: str | Path, device: str = "auto") -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        self.device = resolve_device(device)
        model, self.tokenizer = load_checkpoint(model_dir)
        self.fingerprint = fingerprint(model_dir)
        # bf16 on GPU for speed; fp32 on CPU where bf16 is slow. The memory state is fp32 either way.
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model = model.to(self.device, dtype).eval()
        self.config: ARMTConfig = model.config

    # ---- reading -----------------------------------------------------------------------------
    def new_memory(self) -> Memory:
        return Memory(self.model.new_state(1, self.device))

    def _segments(self, memory: Memory, ids: Iterable[list[int]]) -> Iterator[list[int]]:
        seg = Segmenter(self.config.segment_len, memory.pending)
        for piece in ids:
            memory.tokens += len(piece)
            yield from seg.push(piece)
        memory.pending = seg.pending

    def _doc_ids(self, memory: Memory, docs: list[Document], progress: Progress | None) -> Iterator[list[int]]:
        for doc in docs:
            yield from token_stream(self.tokenizer, doc, progress)
            memory.sources.append(doc.name)

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
        """Read token-id streams into memories, all rows in lockstep, one segment per row per step."""
        streams = [self._segments(m, i) for m, i in zip(memories, ids)]
        state = MemoryState(
            torch.cat([m.state.A for m in memories]).to(self.device), torch.cat([m.state.z for m in memories]).to(self.device)
        )
        live = list(range(len(memories)))
        while live:
            batch, rows = [], []
            for i in live:
                segment = next(streams[i], None)
                if segment is not None:
                    batch.append(segment)
                    rows.append(i)
            live = rows
            if not rows:
                break
            seg_ids = torch.tensor(batch, device=self.device)
            idx = torch.tensor(rows, device=self.device)
            new = self.model.read(seg_ids, state.rows(idx))
            state.A[idx], state.z[idx] = new.A, new.z
            if on_tokens:
                on_tokens(seg_ids.numel())
        for i, m in enumerate(memories):
            m.state = state.rows(slice(i, i + 1))

    def _flushed(self, memory: Memory) -> MemoryState:
        """The state after also reading the unfinished last segment (padded), which ask needs before answering.
        The memory itself keeps those tokens pending, so that more text can still be appended exactly."""
        state = memory.state.to(self.device)
        if not memory.pending:
            return state
        S = self.config.segment_len
        ids = torch.full((1, S), self.config.pad_token_id, device=self.device)
        ids[0, : len(memory.pending)] = torch.tensor(memory.pending, device=self.device)
        return self.model.read(ids, state, torch.tensor([len(memory.pending)], device=self.device))

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
