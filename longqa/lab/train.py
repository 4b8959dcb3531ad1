"""Training: a curriculum over segment counts, dense supervision first, full BPTT, DDP via torchrun.

Every example is a context (cut into segments that write memory) followed by a final question segment
that only reads memory, exactly like `longqa ask`. Two kinds of context (../shared/lab-notes.md):
- dense: a bAbI stream where a question + GEN + answer + EOS follows every 1-3 facts, with a share of
  noise sentences between items; the loss is on every inline answer. This is what teaches the memory.
- single: BABILong proper, facts hidden at random gaps in a run of real noise; only the final answer
  is supervised.
A run resumes from its checkpoint folder (weights, optimizer, step, RNG) and stops by itself after
--max-minutes, so that it fits the device tool's 10-minute commands.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from torch import nn

from longqa.checkpoint import load_model_dir, save_model_dir
from longqa.distributed import any_rank, join
from longqa.errors import InputError
from longqa.input.text import EOS, GEN, encode_sentences
from longqa.lab.generate import babi
from longqa.lab.generate.haystack import NoiseBank, build
from longqa.model import GROWABLE, ARMTConfig, ARMTModel, MemoryState

IGNORE = -100
GATE_LR_SCALE = 50  # the token-write gates' lr against the stage's (ARMTConfig.token_writes)
MAX_SKIPPED = 100  # non-finite steps tolerated in one call before training stops with an error


@dataclass
class Stage:
    steps: int
    max_segments: int  # lengths are drawn uniformly in 1..max_segments segments
    dense: float  # share of examples that are dense streams
    lr: float = 3e-4
    lr_end: float | None = None  # decay linearly from lr to lr_end over the stage; None: constant
    batch: int | None = None  # examples per step, over all GPUs; None: TrainConfig.batch
    task_weights: list[float] | None = None  # sampling weight per babi.TASKS entry; None: uniform
    # Chance that a batch row starts from the memory its row ended the previous step with (detached)
    # instead of an empty one. Rows then see memories hundreds of segments old at no extra cost: a
    # model trained only on fresh memories fell from 100 % to 35 % on QA1 (`longqa eval --prefix 32K`).
    carry: float = 0.0
    write_cap: bool | None = None  # switch the model's write cap on/off from this stage on; None: leave it
    # None: one mean over every answer token, inline and final. A dense row holds hundreds of inline answer
    # tokens and its final question two, so in armt-v4's stages the final answers, the only ones that must
    # come through memory as in `ask`, were 28 % of the answer tokens at one segment and 2.0 % at 16
    # (training/answer_share.py). A number w: mean inline loss + w * mean final loss, a fixed share at any length.
    final_weight: float | None = None
    # Questions after each row's context, each read from the same final memory in its own question segment,
    # as `ask` reads one. Every one is one more example of the memory path for a few tokens of compute.
    final_questions: int = 1
    # How stories are worded (babi.Wording): the defaults are bAbI's. Less inverse QA4 wording, or its first
    # question form only, make the curriculum that teaches the middle room of the line; hints state the rooms
    # that QA2/QA3 otherwise leave to a latest-before lookup.
    qa4_inverse: float = 0.5
    qa4_relative: bool = True
    hints: float = 0.0
    # Chance that a fact's last token is also labelled with where its subject was just before the action
    # (babi.Fact.where), in dense and BABILong rows. The text stays bAbI's: the loss asks for the latest-before
    # lookup at the fact itself, where hints gave the room away and the model learned to use it, not to find it.
    # Learned, it did not help the final answers (training/README.md, seventeenth session).
    where_targets: float = 0.0
    # The layer (0-based) whose output where-targets are scored on; None: the last. The memory tokens of layer l
    # attend to layer l-1's outputs, so a room found only by the last layer is seen by no write.
    where_layer: int | None = None
    # Chance that a dense stream's question is asked and answered inline (the rest are skipped). An inline answer
    # stays in the context, so a later question about the same thing can copy it instead of looking it up: with
    # every question inline, training never needs QA2's latest-before lookup where the eval's documents do.
    inline_questions: float = 1.0
    # Chance, at each segment boundary inside a BABILong row of QA1-QA3, of a question about the story so far,
    # read from the memory after that segment in its own read-only segment as the final ones are. Like inline
    # questions it supervises the memory every segment, yet no answer enters the context to be copied.
    segment_questions: float = 0.0

    def wording(self) -> babi.Wording:
        return babi.Wording(self.qa4_inverse, self.qa4_relative, self.hints)


@dataclass
class TrainConfig:
    noise: list[str]
    tokenizer: str
    out: str
    model: dict = field(default_factory=dict)  # ARMTConfig overrides
    # A model directory (`longqa export`, weights/...) whose weights start a new run, with fresh optimizer
    # moments and the step at 0; its config is kept, except for `model`'s GROWABLE keys (ARMTModel.grown).
    init: str | None = None
    stages: list[Stage] = field(default_factory=list)
    batch: int = 64  # examples per step, over all GPUs, unless a stage sets its own (step_batch, rank_batch)
    warmup: int = 500
    weight_decay: float = 0.01
    clip: float = 1.0
    noise_share: float = 0.25  # chance of a noise sentence before each dense item
    seed: int = 0
    workers: int = 6
    compile: bool = False  # torch.compile each context segment's step (see LossModule)
    log_every: int = 25
    save_every: int = 500

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        raw = json.loads(Path(path).read_text())
        raw["stages"] = [Stage(**s) for s in raw.get("stages", [])]
        return cls(**raw)

    def step_batch(self, stage: Stage) -> int:
        """Examples in one step of `stage`, over all GPUs."""
        return stage.batch or self.batch

    def __post_init__(self) -> None:
        if self.init and not set(self.model) <= GROWABLE:
            raise ValueError(
                f"a run that starts from 'init' keeps that model's config; 'model' may only add {sorted(GROWABLE)}"
            )


# ---- examples ------------------------------------------------------------------------------------
class ExampleMaker:
    """Builds training examples as token ids + next-token labels, with the project's one encoding."""

    def __init__(self, tok: Tokenizer, bank: NoiseBank, segment_len: int, noise_share: float) -> None:
        self.tok, self.bank, self.S, self.noise_share = tok, bank, segment_len, noise_share
        self.gen, self.eos = tok.token_to_id(GEN), tok.token_to_id(EOS)
        self.room_ids = {r: encode_sentences(tok, [r])[0][0] for r in babi.ROOMS}  # where-targets' labels

    def qa(self, question: str, answer: str) -> tuple[list[int], list[int]]:
        """question GEN answer EOS, with labels on answer and EOS (predicted from GEN onwards)."""
        q, a = encode_sentences(self.tok, [question, answer])
        ids = q + [self.gen] + a + [self.eos]
        labels = [IGNORE] * len(q) + a + [self.eos] + [IGNORE]
        return ids, labels

    def dense(self, rng: random.Random, task: str, n_tokens: int, stage: Stage) -> tuple[list[int], list[int], list[int], list[babi.QA]]:
        """Dense stream of about n_tokens context tokens: ids, the inline answers' labels, the where-targets'
        labels and the final questions. The first questions reached after n_tokens become the final (read-only)
        questions instead of being answered inline, so they are valid at the end. With chance
        stage.where_targets a fact's last token gets a where-target, the first token of its Fact.where; with
        chance 1 - stage.inline_questions a question before the end is left out."""
        ids: list[int] = []
        labels: list[int] = []
        wheres: list[int] = []
        where, inline = stage.where_targets, stage.inline_questions
        for item in babi.dense_stream(task, rng, max(8, n_tokens // 8), stage.wording()):
            if isinstance(item, list) and len(ids) >= n_tokens:
                return ids, labels, wheres, item
            if isinstance(item, list) and inline < 1 and rng.random() >= inline:  # no draw at 1: streams as before
                continue
            if rng.random() < self.noise_share:
                noise = self.bank.sentence_ids(rng)
                ids += noise
                labels += [IGNORE] * len(noise)
            if isinstance(item, list):
                qa_ids, qa_labels = self.qa(*item[0])
                ids += qa_ids
                labels += qa_labels
            else:
                fact = encode_sentences(self.tok, [item.text])[0]
                ids += fact
                labels += [IGNORE] * len(fact)
                if where and item.where and rng.random() < where:  # no draw at 0: bAbI's streams stay as they were
                    wheres += [IGNORE] * (len(ids) - len(wheres) - 1) + [self.room_ids[item.where]]
        ids, labels, wheres, asked, _ = self.single(rng, task, n_tokens, replace(stage, segment_questions=0.0))
        return ids, labels, wheres, asked  # the stream ran out first (rare)

    def single(
        self, rng: random.Random, task: str, n_tokens: int, stage: Stage
    ) -> tuple[list[int], list[int], list[int], list[babi.QA], list[tuple[int, babi.QA]]]:
        """A BABILong example: its facts hidden in a noise run. Returned as `dense` returns it (no inline answers:
        all labels IGNORE), and with chance stage.segment_questions per segment boundary inside it, a (segment,
        question) answered by the story up to there. Where-targets as in `dense`, at the facts."""
        where, mid = stage.where_targets, stage.segment_questions
        sample = babi.generate(task, rng, stage.wording(), mid_story=bool(mid))
        hay = build(sample, self.bank, self.tok, n_tokens, rng, keep_sentences=False)
        labels = [IGNORE] * hay.n_tokens
        wheres = list(labels)
        for end, room in zip(hay.fact_ends, sample.where):
            if where and room and rng.random() < where:
                wheres[end] = self.room_ids[room]
        mids = []
        for s in range(math.ceil(hay.n_tokens / self.S) - 1) if mid and sample.asked_after else ():
            last = int(np.searchsorted(hay.fact_ends, (s + 1) * self.S)) - 1  # the last fact that ends in segment <= s
            if last >= 0 and sample.asked_after[last] and rng.random() < mid:
                mids.append((s, rng.choice(sample.asked_after[last])))
        return hay.context_ids.tolist(), labels, wheres, [(sample.question, sample.answer), *sample.others], mids

    def example(self, rng: random.Random, stage: Stage, n_segments: int) -> dict:
        task = rng.choices(babi.TASKS, weights=stage.task_weights)[0]
        # Leave room so the context fits the drawn number of segments.
        n_tokens = rng.randint((n_segments - 1) * self.S + self.S // 4, n_segments * self.S - 16)
        mids: list[tuple[int, babi.QA]] = []
        if rng.random() < stage.dense:
            ids, labels, wheres, asked = self.dense(rng, task, n_tokens, stage)
        else:
            ids, labels, wheres, asked, mids = self.single(rng, task, n_tokens, stage)
        finals = asked[:1] + rng.sample(asked[1:], min(stage.final_questions, len(asked)) - 1)
        qs = [self.qa(q, a) for q, a in finals]
        ms = [self.qa(q, a) for _, (q, a) in mids]
        return {
            "ids": ids,
            "labels": labels,
            "where": wheres,
            "q_ids": [q for q, _ in qs],
            "q_labels": [la for _, la in qs],
            "task": task,
            **({"s_seg": [s for s, _ in mids], "s_ids": [q for q, _ in ms], "s_labels": [la for _, la in ms]} if mids else {}),
        }


def _questions(rows: list[tuple[int, list[int], list[int]]], pad: int) -> dict[str, torch.Tensor]:
    """(context row, question ids, labels) as padded ids, labels, lengths and the row each one reads."""
    Q = max((len(q) for _, q, _ in rows), default=1)
    out = {
        "ids": torch.full((len(rows), Q), pad),
        "labels": torch.full((len(rows), Q), IGNORE),
        "lengths": torch.tensor([len(q) for _, q, _ in rows], dtype=torch.long),
        "row": torch.tensor([i for i, _, _ in rows], dtype=torch.long),
    }
    for j, (_, q, la) in enumerate(rows):
        out["ids"][j, : len(q)] = torch.tensor(q)
        out["labels"][j, : len(la)] = torch.tensor(la)
    return out


def collate(examples: list[dict], segment_len: int, pad: int) -> dict[str, torch.Tensor]:
    """Contexts padded to whole segments, one row per example; final questions one row each, with q_row
    naming the context row whose memory each question reads, and task per question row; the segment
    questions (Stage.segment_questions) likewise as s_*, with s_seg the segment after which each is asked."""
    n_seg = max(math.ceil(len(e["ids"]) / segment_len) for e in examples)
    T = n_seg * segment_len
    qs = [(i, q, la) for i, e in enumerate(examples) for q, la in zip(e["q_ids"], e["q_labels"])]
    mids = [(i, q, la) for i, e in enumerate(examples) for q, la in zip(e.get("s_ids", []), e.get("s_labels", []))]
    out = {
        "ids": torch.full((len(examples), T), pad),
        "labels": torch.full((len(examples), T), IGNORE),
        "where": torch.full((len(examples), T), IGNORE),
        "lengths": torch.tensor([len(e["ids"]) for e in examples]),
        "task": torch.tensor([babi.TASKS.index(examples[i]["task"]) for i, _, _ in qs]),
        "s_seg": torch.tensor([s for e in examples for s in e.get("s_seg", [])], dtype=torch.long),
        **{f"q_{k}": v for k, v in _questions(qs, pad).items()},
        **{f"s_{k}": v for k, v in _questions(mids, pad).items()},
    }
    for i, e in enumerate(examples):
        out["ids"][i, : len(e["ids"])] = torch.tensor(e["ids"])
        out["labels"][i, : len(e["labels"])] = torch.tensor(e["labels"])
        out["where"][i, : len(e.get("where", []))] = torch.tensor(e.get("where", []), dtype=torch.long)
    return out


@functools.lru_cache(maxsize=1)
def noise_bank(files: tuple[str, ...], tokenizer: str) -> NoiseBank:
    """Built once per process: it takes seconds, and benchmarks/train_step.py trains many short runs in one."""
    return NoiseBank(files, Tokenizer.from_file(tokenizer))


class Batches(torch.utils.data.IterableDataset):
    """Endless batches for the curriculum from `start` on. The noise bank is built once here, before the
    DataLoader forks its workers, which then share it; each worker draws its own examples."""

    def __init__(self, cfg: TrainConfig, segment_len: int, pad: int, rank: int, world: int, start: int) -> None:
        self.cfg, self.S, self.pad, self.rank, self.world, self.start = cfg, segment_len, pad, rank, world, start
        tok = Tokenizer.from_file(cfg.tokenizer)
        self.maker = ExampleMaker(tok, noise_bank(tuple(cfg.noise), cfg.tokenizer), segment_len, cfg.noise_share)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        rng = random.Random(hash((self.cfg.seed, self.rank, wid, self.start)))
        step = self.start + wid
        while True:
            stage = stage_at(self.cfg.stages, step)
            # Every rank draws the same segment count for a step: DDP waits for the slowest rank.
            n_seg = random.Random(hash((self.cfg.seed, step))).randint(1, stage.max_segments)
            size = rank_batch(self.cfg, stage, self.world)
            yield collate([self.maker.example(rng, stage, n_seg) for _ in range(size)], self.S, self.pad)
            step += nw


def rank_batch(cfg: TrainConfig, stage: Stage, world: int) -> int:
    """Examples each of `world` GPUs draws for a step of `stage`. A config's batch counts the whole step, so
    a recipe means the same on any machine: when it counted per GPU, armt-v2 went on 4x smaller on one GPU."""
    batch = cfg.step_batch(stage)
    if batch % world:
        raise InputError(f"a batch of {batch} does not split over {world} GPUs (torchrun processes): make it a multiple of {world}")
    return batch // world


def stage_position(stages: list[Stage], step: int) -> tuple[Stage, int]:
    """The stage that global `step` falls in, and how many of its steps came before."""
    for s in stages:
        if step < s.steps:
            return s, step
        step -= s.steps
    return stages[-1], stages[-1].steps


def stage_at(stages: list[Stage], step: int) -> Stage:
    return stage_position(stages, step)[0]


# ---- loss ----------------------------------------------------------------------------------------
class LossModule(nn.Module):
    """Full BPTT through every segment of the batch; DDP wraps this so all parameters sync."""

    def __init__(self, model: ARMTModel, compile: bool = False) -> None:
        super().__init__()
        self.model = model
        # A training step at this size is mostly kernel launches; compiled, a segment's forward and backward
        # fuse their element-wise work. Shapes are static within a stage; the question segment stays eager.
        self.segment = torch.compile(self._segment, dynamic=False) if compile else self._segment
        if compile:
            # Four graphs per batch size (first segment or not, full or ragged), and one process may cross
            # several stages' batch sizes: past dynamo's default of 8 the rest would silently run eager.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)

    def _segment(
        self, ids: torch.Tensor, A: torch.Tensor, z: torch.Tensor, lengths: torch.Tensor | None, tap: int | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The segment's outputs, those where-targets are scored on (Stage.where_layer), and the new memory."""
        h, state, *tapped = self.model.read_segment(ids, MemoryState(A, z), lengths, tap)
        return h, (tapped or [h])[0], state.A, state.z

    def forward(
        self,
        b: dict[str, torch.Tensor],
        A0: torch.Tensor,
        z0: torch.Tensor,
        final_weight: float | None = None,
        where_layer: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, MemoryState]:
        """Loss (weighted as Stage.final_weight says; where-targets count with the inline answers), the final
        answers' mean loss (detached), exact match and task id per final question, and the detached memory after
        the context (for carrying). A0, z0: the memory each row starts from (plain tensors, so DDP passes them
        through)."""
        m = self.model
        S = m.config.segment_len
        B, T = b["ids"].shape
        state = MemoryState(A0, z0)
        loss = torch.zeros((), device=b["ids"].device)  # summed over the inline answer tokens
        count = 0
        mid = torch.zeros((), device=b["ids"].device)  # summed over the segment questions' answer tokens
        n_mid = 0
        mid_seg = b["s_seg"].tolist()
        for s in range(T // S):
            lengths = (b["lengths"] - s * S).clamp(0, S)
            full = bool((lengths == S).all())
            # contiguous: a slice's row stride is the batch's length, and compiled code guards on strides
            ids = b["ids"][:, s * S : (s + 1) * S].contiguous()
            h, h_where, A, z = self.segment(ids, state.A, state.z, None if full else lengths, where_layer)
            state = MemoryState(A, z)
            targets = [(out, b[key][:, s * S : (s + 1) * S]) for out, key in ((h, "labels"), (h_where, "where"))]
            sels = [labels != IGNORE for _, labels in targets]
            counts = torch.stack([sel.sum() for sel in sels]).tolist()  # one host sync for both kinds of label
            for (out, labels), sel, n in zip(targets, sels, counts):
                if n:
                    loss = loss + F.cross_entropy(m.logits(out[sel]).float(), labels[sel], reduction="sum")
                    count += n
            if s in mid_seg:
                at = torch.tensor([j for j, t in enumerate(mid_seg) if t == s], device=b["s_seg"].device)
                hq = m.read_only(b["s_ids"][at], state.rows(b["s_row"][at]), b["s_lengths"][at])
                sel = b["s_labels"][at] != IGNORE
                mid = mid + F.cross_entropy(m.logits(hq[sel]).float(), b["s_labels"][at][sel], reduction="sum")
                n_mid += int(sel.sum())
        carried = MemoryState(state.A.detach(), state.z.detach())
        h = m.read_only(b["q_ids"], state.rows(b["q_row"]), b["q_lengths"])
        sel = b["q_labels"] != IGNORE
        logits = m.logits(h[sel]).float()
        final = F.cross_entropy(logits, b["q_labels"][sel], reduction="sum")
        n_final = int(sel.sum())
        # Segment questions come through memory as the final ones do, and share their part of the loss.
        if final_weight is None:
            total = (loss + final + mid) / (count + n_final + n_mid)
        else:
            total = loss / max(count, 1) + final_weight * (final + mid) / (n_final + n_mid)
        hits = rows_exact(logits.argmax(-1) == b["q_labels"][sel], sel)
        return total, (final / n_final).detach(), hits, b["task"], carried


def rows_exact(hits: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """Exact match per row: every supervised position (sel, B x T) right; hits holds sel's positions in order."""
    right = torch.ones_like(sel)
    right[sel] = hits
    return right.all(1)


# ---- checkpoints (safetensors only; every file <= 16 MiB so it can come back from the GPU box) ----
SHARD_BYTES = 15 << 20


def save_tensors_sharded(tensors: dict[str, torch.Tensor], folder: Path, stem: str) -> None:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = t.contiguous()
        size += nbytes
    for old in folder.glob(f"{stem}-*.safetensors"):
        old.unlink()
    for i, shard in enumerate(shards):
        save_file(shard, folder / f"{stem}-{i:02d}-of-{len(shards):02d}.safetensors")


def load_tensors_sharded(folder: Path, stem: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob(f"{stem}-*.safetensors")):
        out.update(load_file(f))
    return out


def save_training(folder: Path, model: ARMTModel, tok: Tokenizer, opt: torch.optim.Optimizer, step: int, rng_seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    save_tensors_sharded({k: v.detach().float().cpu() for k, v in model.state_dict().items()}, folder, "model")
    # Adam moments in bf16 halve what must travel; they only steer step sizes, so bf16 is plenty.
    names = {id(p): n for n, p in model.named_parameters()}
    moments: dict[str, torch.Tensor] = {}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if st:
                moments[f"{names[id(p)]}.exp_avg"] = st["exp_avg"].to(torch.bfloat16).cpu()
                moments[f"{names[id(p)]}.exp_avg_sq"] = st["exp_avg_sq"].to(torch.bfloat16).cpu()
    save_tensors_sharded(moments, folder, "optimizer")
    meta = {"step": step, "seed": rng_seed, "torch_rng": torch.get_rng_state().tolist()}
    tmp = folder / "trainer.json.tmp"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, folder / "trainer.json")


def load_model(folder: Path) -> ARMTModel:
    """The model of a training checkpoint folder (weights sharded so every file can travel)."""
    model = ARMTModel(ARMTConfig.from_pretrained(folder))
    model.load_state_dict(load_tensors_sharded(folder, "model"))
    return model


def export(folder: Path, out: Path) -> None:
    """Turn a training checkpoint into a shippable model directory (config, one safetensors, tokenizer)."""
    save_model_dir(load_model(folder), Tokenizer.from_file(str(folder / "tokenizer.json")), out)


def load_training(folder: Path, model: ARMTModel, opt: torch.optim.Optimizer) -> tuple[int, bool]:
    """Restore optimizer moments, RNG and step; returns (step, whether moments were there). The optimizer
    shards may be left behind on purpose: weights alone fit the device tool's 64 MiB carry, both do not."""
    meta = json.loads((folder / "trainer.json").read_text())
    moments = load_tensors_sharded(folder, "optimizer")
    for name, p in model.named_parameters():
        if f"{name}.exp_avg" in moments:
            opt.state[p] = {
                "step": torch.tensor(float(meta["step"]), device=p.device),  # fused AdamW wants it beside p
                "exp_avg": moments[f"{name}.exp_avg"].to(p.device, torch.float32),
                "exp_avg_sq": moments[f"{name}.exp_avg_sq"].to(p.device, torch.float32),
            }
    torch.set_rng_state(torch.tensor(meta["torch_rng"], dtype=torch.uint8))
    return int(meta["step"]), bool(moments)


# ---- the loop ------------------------------------------------------------------------------------
def start_state(
    model: ARMTModel, carry: float, carried: MemoryState | None, batch: int, device: torch.device
) -> MemoryState:
    """Empty memories, except that each row keeps last step's memory with chance `carry` (see Stage)."""
    state = model.new_state(batch, device)
    if carry > 0 and carried is not None and carried.batch_size == batch:
        finite = torch.isfinite(carried.A).flatten(1).all(1) & torch.isfinite(carried.z).flatten(1).all(1)
        keep = (torch.rand(batch, device=device) < carry) & finite
        state.A[keep], state.z[keep] = carried.A[keep], carried.z[keep]
    return state


def exact_by_task(exact: torch.Tensor, task: torch.Tensor) -> dict[str, float]:
    """Final-answer exact match over a window of final questions: overall and per task."""
    out = {"exact": float(exact.float().mean())}
    for i, name in enumerate(babi.TASKS):
        sel = task == i
        if sel.any():
            out[f"exact_{name}"] = float(exact[sel].float().mean())
    return out


def lr_at(cfg: TrainConfig, step: int, warm_from: int = 0) -> float:
    """The stage's lr, warmed up over cfg.warmup steps from step `warm_from` (0; or the step a run resumed
    at without its optimizer moments: fresh Adam moments at full lr make a first step as large as lr)."""
    stage, done = stage_position(cfg.stages, step)
    base = stage.lr
    if stage.lr_end is not None:  # linear decay across the stage
        base += (stage.lr_end - stage.lr) * done / stage.steps
    return base * min(1.0, (step - warm_from + 1) / cfg.warmup)


def train(cfg: TrainConfig, max_minutes: float, log=print) -> int:
    """Train until the curriculum ends or max_minutes pass; returns the step reached."""
    t0 = time.time()
    rank, world = join()
    ddp = world > 1
    for stage in cfg.stages:  # refuse a batch that does not split before any work is done
        rank_batch(cfg, stage, world)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer.from_file(cfg.tokenizer)
    resume = (out / "trainer.json").is_file()
    if resume:
        model = load_model(out)
    elif cfg.init:
        model, init_tok = load_model_dir(cfg.init)
        if init_tok.get_vocab() != tok.get_vocab():
            raise InputError(f"{cfg.init} was trained with another tokenizer than {cfg.tokenizer}")
        model = model.float().grown(**cfg.model) if cfg.model else model.float()
    else:
        torch.manual_seed(cfg.seed)
        mcfg = ARMTConfig(
            vocab_size=tok.get_vocab_size(),
            pad_token_id=tok.token_to_id("[PAD]"),
            gen_token_id=tok.token_to_id(GEN),
            eos_token_id=tok.token_to_id(EOS),
            **cfg.model,
        )
        model = ARMTModel(mcfg)
    for stage in cfg.stages:
        if stage.where_layer is not None and not 0 <= stage.where_layer < model.config.n_layers:
            raise InputError(f"where_layer {stage.where_layer} is not a layer of this {model.config.n_layers}-layer model (0-based)")
    model.to(device).train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    gates = [p for n, p in model.named_parameters() if n.endswith("token_gate")]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 and not n.endswith("token_gate")]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if gates:  # Adam moves a parameter about lr a step: at 2e-4 a gate that starts at 0 would need 5,000 steps to open
        groups.append({"params": gates, "weight_decay": 0.0, "lr_scale": GATE_LR_SCALE})
    opt = torch.optim.AdamW(
        groups,
        lr=cfg.stages[0].lr,
        betas=(0.9, 0.95),
        fused=device.type == "cuda",
    )
    step, had_moments = load_training(out, model, opt) if resume else (0, True)
    warm_from = 0 if had_moments else step
    if not had_moments and rank == 0:
        log(f"resuming at step {step} without optimizer moments: lr warms up again over {cfg.warmup} steps")
    total = sum(s.steps for s in cfg.stages)
    loss_mod = LossModule(model, cfg.compile)
    net = nn.parallel.DistributedDataParallel(loss_mod) if ddp else loss_mod
    data = torch.utils.data.DataLoader(
        Batches(cfg, model.config.segment_len, model.config.pad_token_id, rank, world, step),
        batch_size=None,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if cfg.workers else None,
        persistent_workers=False,
    )
    log_path = out / "log.jsonl"
    window: list[dict] = []
    carried: MemoryState | None = None  # not saved: a resumed run starts from empty memories
    skipped = 0
    last = time.time()
    for batch in data:
        if any_rank(step >= total or (time.time() - t0) / 60 > max_minutes, device):
            break
        b = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step, warm_from) * g.get("lr_scale", 1)
        stage = stage_at(cfg.stages, step)
        if stage.write_cap is not None:
            model.set_write_cap(stage.write_cap)
        start = start_state(model, stage.carry, carried, b["ids"].shape[0], device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss, final_loss, exact, task, carried = net(b, start.A, start.z, stage.final_weight, stage.where_layer)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        step += 1
        # gnorm is computed from the all-reduced gradients, so every rank takes the same branch.
        if torch.isfinite(gnorm):
            opt.step()
            window.append(
                {"loss": loss.detach(), "final_loss": final_loss, "exact": exact.detach(), "task": task, "gnorm": gnorm.detach()}
            )
        else:  # one bad batch must not poison the weights (or the carried memories)
            skipped, carried = skipped + 1, None
            if skipped > MAX_SKIPPED:
                raise RuntimeError(f"training diverged: {skipped} non-finite steps by step {step}")
        if window and (step % cfg.log_every == 0 or step == total):
            now = time.time()
            rec = {
                "step": step,
                "loss": float(torch.stack([w["loss"] for w in window]).mean()),
                "final_loss": float(torch.stack([w["final_loss"] for w in window]).mean()),
                **exact_by_task(torch.cat([w["exact"] for w in window]), torch.cat([w["task"] for w in window])),
                "gnorm": float(torch.stack([w["gnorm"] for w in window]).mean()),
                "lr": lr_at(cfg, step - 1, warm_from),
                "max_segments": stage.max_segments,
                "batch": cfg.step_batch(stage),
                "skipped": skipped,
                "gpus": world,
                "sec_per_step": (now - last) / len(window),
                "minutes": (now - t0) / 60,
            }
            window, last = [], now
            if rank == 0:
                log(json.dumps(rec))
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
        if rank == 0 and step % cfg.save_every == 0:
            save_training(out, model, tok, opt, step, cfg.seed)
    if rank == 0:
        save_training(out, model, tok, opt, step, cfg.seed)
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1))
    if ddp:  # no rank exits (and leaves the group, distributed._leave) before rank 0 has saved
        dist.barrier()
    return step


def plot_log(log_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].plot(steps, [r["loss"] for r in rows])
    ax[0].set_yscale("log")
    ax[0].set_title("training loss (answer tokens)")
    ax[1].plot(steps, [r["exact"] for r in rows], label="final answer exact match (train batches)")
    ax[1].plot(steps, [r["max_segments"] / max(r["max_segments"] for r in rows) for r in rows], "--", label="curriculum (max segments, scaled)")
    ax[1].set_ylim(0, 1.02)
    ax[1].legend(loc="lower right", fontsize=8)
    for a in ax:
        a.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
