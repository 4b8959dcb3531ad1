"""The trainer: a curriculum of stages over segment counts, full backprop through every segment, DDP under
torchrun, and runs that stop and resume anywhere (docs/training.md).

A stage runs for at most `steps` steps; with a `bar` it ends as soon as held-out validation at the stage's
length reaches the bar on every task, and with `patience` once validation stops improving. Between
validations the task mix can follow the distance of each task from its bar (Stage.adapt_weights).

A run lives in one folder (TrainConfig.out): weights (bf16), Adam's moments (bf16) and trainer.json (step,
stage, the stage's start, task weights, validation history, RNG). `longqa train` resumes from it whenever it
is there, so a run can be carried from machine to machine, and committed between sessions
(training/runs/NAME/). It stops by itself after --max-minutes, to fit a lent GPU's 10-minute commands.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from torch import nn

from longqa.checkpoint import load_model_dir, save_model_dir
from longqa.device import resolve_device
from longqa.distributed import any_rank, join
from longqa.errors import InputError
from longqa.input.text import EOS, GEN, PAD
from longqa.lab.generate import babi
from longqa.lab.generate.examples import IGNORE, Batch, ExampleMaker, collate
from longqa.lab.generate.haystack import NoiseBank
from longqa.model import ARMTConfig, ARMTModel, MemoryState, split_segments

MAX_SKIPPED = 100  # non-finite steps tolerated in one call before training stops with an error
WEIGHT_FLOOR = 0.1  # adapt_weights: a task at its bar keeps this weight, so that it is still rehearsed
Log = Callable[[str], None]


@dataclass
class Stage:
    steps: int  # the most steps the stage runs; a bar or patience may end it sooner
    max_segments: int  # lengths are drawn uniformly in 1..max_segments segments, per step
    dense: float  # share of examples that are dense streams
    lr: float = 3e-4
    lr_end: float | None = None  # decay linearly from lr to lr_end over `steps`; None: constant
    batch: int | None = None  # examples per step, over all GPUs; None: TrainConfig.batch
    task_weights: list[float] | None = None  # sampling weight per babi.TASKS entry; None: uniform
    # Chance that a batch row starts from the memory its row ended the previous step with (detached) instead of an
    # empty one, so that rows see memories hundreds of segments old at no extra cost.
    carry: float = 0.0
    # None: one mean over every supervised answer token, inline and final. A number w: mean inline loss + w * mean
    # loss of the answers read from memory (final and segment questions), a fixed share at any length.
    final_weight: float | None = None
    final_questions: int = 1  # questions after each row's context, each read from its final memory
    qa4_inverse: float | None = None  # babi.Wording (None: bAbI's); 0.0 words QA4 one way, the curriculum the shipped lineage used
    qa4_relative: bool = True
    inline_questions: float = 1.0  # chance that a dense stream's question is asked inline (the rest are skipped)
    # Chance, at each segment boundary inside a BABILong row of QA1-QA3, of a question about the story so far, read
    # from the memory after that segment: supervision through memory at every segment, with nothing to copy.
    segment_questions: float = 0.0
    real_stories: float = 0.0  # share of stories taken from the real bAbI training stories (babi_stories)
    # Validation exact match per task (babi.TASKS order) that ends the stage once every task reaches it.
    bar: list[float] | None = None
    patience: int = 0  # validations in a row without a new best mean that end the stage (0: never)
    adapt_weights: bool = False  # after each validation, weight each task by its distance from the bar

    def wording(self) -> babi.Wording:
        return babi.Wording(self.qa4_inverse, self.qa4_relative)

    def validates(self) -> bool:
        return self.bar is not None or self.patience > 0 or self.adapt_weights


@dataclass
class TrainConfig:
    noise: list[str]
    tokenizer: str
    out: str
    model: dict = field(default_factory=dict)  # ARMTConfig overrides of a run from scratch
    init: str | None = None  # a model directory whose weights start the run (fresh optimizer, step 0)
    stages: list[Stage] = field(default_factory=list)
    batch: int = 64  # examples per step, over all GPUs, unless a stage sets its own (rank_batch)
    warmup: int = 500
    weight_decay: float = 0.01
    clip: float = 1.0
    noise_share: float = 0.25  # chance of a noise sentence before each dense item
    seed: int = 0
    workers: int = 6
    compile: bool = False  # torch.compile each context segment's step (LossModule)
    log_every: int = 25
    save_every: int = 500
    stop_at_step: int | None = None  # the run ends here even if its stages go on (a recipe that was cut short)
    # Validation (Stage.validates): documents per task at the stage's length, on noise that neither training nor
    # `longqa eval` uses, from seeds of their own.
    val_noise: list[str] = field(default_factory=list)
    val_every: int = 250
    val_samples: int = 100

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        raw = json.loads(Path(path).read_text())
        raw["stages"] = [Stage(**s) for s in raw.get("stages", [])]
        return cls(**raw)

    def __post_init__(self) -> None:
        if self.init and self.model:
            raise ValueError("a run that starts from 'init' keeps that model's config: leave 'model' out")
        for i, s in enumerate(self.stages):
            for name in ("task_weights", "bar"):
                values = getattr(s, name)
                if values is not None and len(values) != len(babi.TASKS):
                    raise ValueError(f"stage {i}: {name} needs one value per task ({', '.join(babi.TASKS)})")
        if any(s.validates() for s in self.stages) and not self.val_noise:
            raise ValueError("a stage validates (bar, patience or adapt_weights), but the config names no val_noise")

    def step_batch(self, stage: Stage) -> int:
        return stage.batch or self.batch

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)


def rank_batch(cfg: TrainConfig, stage: Stage, world: int) -> int:
    """Examples each of `world` GPUs draws for a step of `stage`. A config's batch counts the whole step, so a
    recipe means the same on any machine."""
    batch = cfg.step_batch(stage)
    if batch % world:
        raise InputError(f"a batch of {batch} does not split over {world} GPUs (torchrun processes): make it a multiple of {world}")
    return batch // world


# ---- the run's state ------------------------------------------------------------------------------
@dataclass
class Progress:
    """Where a run is: saved as trainer.json beside its weights, so that it resumes exactly there."""

    step: int = 0
    stage: int = 0
    stage_start: int = 0  # the step at which the current stage began
    task_weights: list[float] | None = None  # the current mix (adapt_weights); None: the stage's own
    best: float = -1.0  # the stage's best validation mean so far
    since_best: int = 0  # validations since then
    validations: list[dict] = field(default_factory=list)
    warm_from: int = 0  # the step the lr warm-up counts from (a resume without Adam's moments warms up again)
    seed: int = 0
    tokenizer: str = ""

    def stage_steps(self) -> int:
        return self.step - self.stage_start


def lr_at(cfg: TrainConfig, p: Progress) -> float:
    """The current stage's lr (linear from lr to lr_end over its steps), warmed up over cfg.warmup steps."""
    stage = cfg.stages[min(p.stage, len(cfg.stages) - 1)]
    base = stage.lr
    if stage.lr_end is not None:
        base += (stage.lr_end - stage.lr) * min(p.stage_steps(), stage.steps) / stage.steps
    return base * min(1.0, (p.step - p.warm_from + 1) / cfg.warmup)


def next_stage(cfg: TrainConfig, p: Progress, accuracy: dict[str, float] | None) -> bool:
    """Record a validation (if any) and decide whether the stage ends now: its steps are done, its bar is
    reached on every task, or it has not improved for `patience` validations. Updates the task weights."""
    stage = cfg.stages[p.stage]
    if accuracy is not None:
        mean = sum(accuracy.values()) / len(accuracy)
        p.validations.append({"step": p.step, "stage": p.stage, **{k: round(v, 4) for k, v in accuracy.items()}})
        p.best, p.since_best = (mean, 0) if mean > p.best + 0.005 else (p.best, p.since_best + 1)
        if stage.adapt_weights and stage.bar:
            p.task_weights = [WEIGHT_FLOOR + max(0.0, bar - accuracy[t]) for t, bar in zip(babi.TASKS, stage.bar)]
    done = p.stage_steps() >= stage.steps
    if accuracy is not None and stage.bar is not None:
        done |= all(accuracy[t] >= bar for t, bar in zip(babi.TASKS, stage.bar))
    if accuracy is not None and stage.patience:
        done |= p.since_best >= stage.patience
    if done:
        p.stage, p.stage_start, p.best, p.since_best, p.task_weights = p.stage + 1, p.step, -1.0, 0, None
    return done


# ---- data -----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def noise_bank(files: tuple[str, ...], tokenizer: str) -> NoiseBank:
    """Built once per process: it takes seconds, and a run builds its loader again after every validation."""
    return NoiseBank(files, Tokenizer.from_file(tokenizer))


class Batches(torch.utils.data.IterableDataset):
    """Endless batches of one stage from step `start` on, with the given task mix. The noise bank is built
    before the DataLoader forks its workers, which share it; each worker draws its own steps' examples."""

    def __init__(self, cfg: TrainConfig, stage: Stage, task_weights: list[float] | None, segment_len: int, pad: int,
                 rank: int, world: int, start: int) -> None:
        self.cfg, self.stage, self.weights, self.S, self.pad = cfg, stage, task_weights, segment_len, pad
        self.size, self.rank, self.start = rank_batch(cfg, stage, world), rank, start
        tok = Tokenizer.from_file(cfg.tokenizer)
        self.maker = ExampleMaker(tok, noise_bank(tuple(cfg.noise), cfg.tokenizer), segment_len, cfg.noise_share)
        if stage.real_stories:
            from longqa.lab.generate import babi_stories

            for task in babi.TASKS:  # parsed here, so that the workers share them
                babi_stories.load(task)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        rng = random.Random(hash((self.cfg.seed, self.rank, wid, self.start)))
        step = self.start + wid
        while True:
            # Every rank draws the same segment count for a step: DDP waits for the slowest rank.
            n_seg = random.Random(hash((self.cfg.seed, step))).randint(1, self.stage.max_segments)
            yield collate([self.maker.example(rng, self.stage, n_seg, self.weights) for _ in range(self.size)], self.S, self.pad)
            step += nw


def stage_loader(cfg: TrainConfig, stage: Stage, task_weights: list[float] | None, config: ARMTConfig, rank: int,
                 world: int, start: int, device: torch.device) -> torch.utils.data.DataLoader:
    """The stage's batches from step `start` on, made by cfg.workers processes."""
    return torch.utils.data.DataLoader(
        Batches(cfg, stage, task_weights, config.segment_len, config.pad_token_id, rank, world, start),
        batch_size=None, num_workers=cfg.workers, pin_memory=device.type == "cuda",
        prefetch_factor=4 if cfg.workers else None,
    )


# ---- loss -----------------------------------------------------------------------------------------
class LossModule(nn.Module):
    """Full backprop through every segment of the batch; DDP wraps this so that all parameters sync."""

    def __init__(self, model: ARMTModel, compile: bool = False) -> None:
        super().__init__()
        self.model = model
        # A training step at this size is mostly kernel launches; compiled, a segment's forward and backward fuse
        # their element-wise work. Context segments have static shapes within a stage. Question segments come in
        # any number and length, so theirs are dynamic: eager, they were most of a step's launches.
        self._compiled = torch.compile(self._segment, dynamic=False) if compile else self._segment
        self._compiled_question = torch.compile(self._question, dynamic=True) if compile else self._question
        if compile:
            # Two graphs per batch size (full or ragged segments), and one process may cross several stages'
            # batch sizes: past dynamo's default of 8 the rest would silently run eager.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)

    def _segment(self, ids: torch.Tensor, A: torch.Tensor, z: torch.Tensor, lengths: torch.Tensor | None):
        h, memory = self.model.context_segment(ids, MemoryState(A, z), lengths)
        return h, memory.A, memory.z

    def step(self, ids: torch.Tensor, memory: MemoryState, lengths: torch.Tensor | None) -> tuple[torch.Tensor, MemoryState]:
        """ARMTModel.context_segment, compiled or not (plain tensors in and out, which compiled code guards best)."""
        h, A, z = self._compiled(ids, memory.A, memory.z, lengths)
        return h, MemoryState(A, z)

    def _question(self, ids: torch.Tensor, A: torch.Tensor, z: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.model.question_segment(ids, MemoryState(A, z), lengths)

    def _answers(self, q, memory: MemoryState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Summed loss, argmax and labels of question segments q, each reading its row of `memory`."""
        rows = memory.rows(q.row)
        h = self._compiled_question(q.ids, rows.A, rows.z, q.lengths)
        sel = q.labels != IGNORE
        logits = self.model.logits(h[sel]).float()
        return F.cross_entropy(logits, q.labels[sel], reduction="sum"), logits.argmax(-1), sel

    def forward(
        self, b: Batch, A0: torch.Tensor, z0: torch.Tensor, final_weight: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, MemoryState]:
        """The loss (weighted as Stage.final_weight says), the final answers' mean loss (detached), exact match
        and task per final question, and the detached memory after the context (for carrying). A0, z0: the
        memory each row starts from (plain tensors, so that DDP passes them through)."""
        m = self.model
        S = m.config.segment_len
        sums = {"inline": torch.zeros((), device=b.ids.device), "mid": torch.zeros((), device=b.ids.device)}
        counts = {"inline": 0, "mid": 0}  # supervised tokens: inline answers, segment questions' answers
        mid_seg = b.mids.seg.tolist()

        def on_segment(s: int, h: torch.Tensor, memory: MemoryState) -> None:
            labels = b.labels[:, s * S : (s + 1) * S]
            sel = labels != IGNORE
            n = int(sel.sum())
            if n:
                sums["inline"] = sums["inline"] + F.cross_entropy(m.logits(h[sel]).float(), labels[sel], reduction="sum")
                counts["inline"] += n
            if s in mid_seg:
                loss, _, sel = self._answers(b.mids.select(b.mids.seg == s), memory)
                sums["mid"] = sums["mid"] + loss
                counts["mid"] += int(sel.sum())

        # The start memory as a leaf that asks for a gradient: then the first segment runs the same compiled graph
        # as the others, and each start or new batch size compiles two graphs (full, ragged) instead of four.
        start = MemoryState(A0.detach().requires_grad_(), z0.detach().requires_grad_())
        memory = m.read_context(split_segments(b.ids, b.lengths, S), start, self.step, on_segment)
        inline, n_inline, mid, n_mid = sums["inline"], counts["inline"], sums["mid"], counts["mid"]
        final, guess, sel = self._answers(b.finals, memory)
        n_final = int(sel.sum())
        # Segment questions come through memory as the final ones do, and share their part of the loss.
        if final_weight is None:
            total = (inline + final + mid) / (n_inline + n_final + n_mid)
        else:
            total = inline / max(n_inline, 1) + final_weight * (final + mid) / (n_final + n_mid)
        return total, (final / n_final).detach(), rows_exact(guess == b.finals.labels[sel], sel), b.task, memory.detach()


def rows_exact(hits: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """Exact match per row: every supervised position (sel, B x T) right; hits holds sel's positions in order."""
    right = torch.ones_like(sel)
    right[sel] = hits
    return right.all(1)


def exact_by_task(exact: torch.Tensor, task: torch.Tensor) -> dict[str, float]:
    """Final-answer exact match over a window of final questions: overall and per task."""
    out = {"exact": float(exact.float().mean())}
    for i, name in enumerate(babi.TASKS):
        sel = task == i
        if sel.any():
            out[f"exact_{name}"] = float(exact[sel].float().mean())
    return out


def start_memory(model: ARMTModel, carry: float, carried: MemoryState | None, batch: int, device: torch.device) -> MemoryState:
    """Empty memories, except that each row keeps last step's memory with chance `carry` (Stage.carry)."""
    memory = model.new_memory(batch, device)
    if carry > 0 and carried is not None and carried.batch_size == batch:
        finite = torch.isfinite(carried.A).flatten(1).all(1) & torch.isfinite(carried.z).flatten(1).all(1)
        keep = (torch.rand(batch, device=device) < carry) & finite
        memory.A[keep], memory.z[keep] = carried.A[keep], carried.z[keep]
    return memory


# ---- validation -----------------------------------------------------------------------------------
def validate(model: ARMTModel, tok: Tokenizer, cfg: TrainConfig, p: Progress, rank: int, world: int) -> dict[str, float]:
    """Exact match per task on cfg.val_samples documents at the current stage's longest length, read as `ask`
    reads them (a copy of the model, through the Engine). Every rank gets the same numbers."""
    from longqa.engine import Engine
    from longqa.lab.eval import evaluate_cell

    stage = cfg.stages[p.stage]
    length = stage.max_segments * model.config.segment_len - 64  # room for the question, as training leaves it
    engine = Engine.from_model(copy.deepcopy(model), tok, str(next(model.parameters()).device), use_graphs=False)
    bank = noise_bank(tuple(cfg.val_noise), cfg.tokenizer)
    cells = {t: evaluate_cell(engine, bank, t, length, cfg.val_samples, 90_000 + p.stage, cfg.val_samples, rank, world)
             for t in babi.TASKS}
    return {t: c.accuracy for t, c in cells.items()}


# ---- checkpoints (safetensors; every file <= 16 MiB, so that it can come back from a lent GPU machine) ----
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


def save_run(folder: Path, model: ARMTModel, opt: torch.optim.Optimizer, p: Progress) -> None:
    """Weights and Adam's moments in bf16 (half of what must travel; a resumed run rounds its fp32 weights
    once, and moments only steer step sizes), and trainer.json last, renamed into place: a run killed while
    saving resumes from the previous trainer.json."""
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    save_tensors_sharded({k: v.detach().to(torch.bfloat16).cpu() for k, v in model.state_dict().items()}, folder, "model")
    names = {id(q): n for n, q in model.named_parameters()}
    moments: dict[str, torch.Tensor] = {}
    for group in opt.param_groups:
        for q in group["params"]:
            st = opt.state.get(q)
            if st:
                moments[f"{names[id(q)]}.exp_avg"] = st["exp_avg"].to(torch.bfloat16).cpu()
                moments[f"{names[id(q)]}.exp_avg_sq"] = st["exp_avg_sq"].to(torch.bfloat16).cpu()
    save_tensors_sharded(moments, folder, "optimizer")
    meta = {**asdict(p), "torch_rng": torch.get_rng_state().tolist()}
    tmp = folder / "trainer.json.tmp"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, folder / "trainer.json")


def load_run_model(folder: Path) -> ARMTModel:
    """The model of a run folder, in fp32."""
    model = ARMTModel(ARMTConfig.from_pretrained(folder))
    model.load_state_dict(load_tensors_sharded(folder, "model"))
    return model


def resume_run(folder: Path, model: ARMTModel, opt: torch.optim.Optimizer) -> Progress:
    """Adam's moments (when the folder has them), the RNG and the run's Progress. Without moments the lr warms
    up again from here: fresh moments at full lr make a first step as large as lr."""
    meta = json.loads((folder / "trainer.json").read_text())
    torch.set_rng_state(torch.tensor(meta.pop("torch_rng"), dtype=torch.uint8))
    p = Progress(**meta)
    moments = load_tensors_sharded(folder, "optimizer")
    for name, q in model.named_parameters():
        if f"{name}.exp_avg" in moments:
            opt.state[q] = {
                "step": torch.tensor(float(p.step), device=q.device),  # fused AdamW wants it beside q
                "exp_avg": moments[f"{name}.exp_avg"].to(q.device, torch.float32),
                "exp_avg_sq": moments[f"{name}.exp_avg_sq"].to(q.device, torch.float32),
            }
    if not moments:
        p.warm_from = p.step
    return p


def export(folder: Path, out: Path) -> None:
    """A run folder as a model directory (config, one bf16 safetensors, the run's tokenizer)."""
    p = json.loads((folder / "trainer.json").read_text())
    save_model_dir(load_run_model(folder), Tokenizer.from_file(p["tokenizer"]), out)


# ---- the loop -------------------------------------------------------------------------------------
def new_model(cfg: TrainConfig, tok: Tokenizer) -> ARMTModel:
    if cfg.init:
        model, init_tok = load_model_dir(cfg.init)
        if init_tok.get_vocab() != tok.get_vocab():
            raise InputError(f"{cfg.init} was trained with another tokenizer than {cfg.tokenizer}")
        return model
    torch.manual_seed(cfg.seed)
    ids = {f"{name}_token_id": tok.token_to_id(t) for name, t in (("pad", PAD), ("gen", GEN), ("eos", EOS))}
    return ARMTModel(ARMTConfig(vocab_size=tok.get_vocab_size(), **ids, **cfg.model))


def train_step(net: nn.Module, model: ARMTModel, opt: torch.optim.Optimizer, b: Batch, start: MemoryState,
               final_weight: float | None, clip: float) -> tuple[dict[str, torch.Tensor] | None, MemoryState]:
    """One optimizer step on batch b: what the log averages (None if the gradient was not finite, and then no
    step was taken), and the memory after the context, for carrying."""
    with torch.autocast(b.ids.device.type, dtype=torch.bfloat16, enabled=b.ids.device.type == "cuda"):
        loss, final_loss, exact, task, carried = net(b, start.A, start.z, final_weight)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    # gnorm comes from the all-reduced gradients, so every rank takes the same branch.
    if not torch.isfinite(gnorm):
        return None, carried
    opt.step()
    return {"loss": loss.detach(), "final_loss": final_loss, "exact": exact.detach(), "task": task, "gnorm": gnorm.detach()}, carried


def train(cfg: TrainConfig, max_minutes: float, log: Log = print) -> int:
    """Train until the curriculum ends, stop_at_step, or max_minutes pass; returns the step reached."""
    t0 = time.time()
    rank, world = join()
    for stage in cfg.stages:  # refuse a batch that does not split before any work is done
        rank_batch(cfg, stage, world)
    device = resolve_device("auto")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer.from_file(cfg.tokenizer)
    resume = (out / "trainer.json").is_file()
    model = (load_run_model(out) if resume else new_model(cfg, tok)).to(device).train()
    decay = [q for q in model.parameters() if q.dim() >= 2]
    no_decay = [q for q in model.parameters() if q.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.stages[0].lr, betas=(0.9, 0.95), fused=device.type == "cuda",
    )
    p = resume_run(out, model, opt) if resume else Progress(seed=cfg.seed, tokenizer=cfg.tokenizer)
    cfg = replace(cfg, seed=p.seed)  # a run keeps the seed it started with (device_seeds.sh picks one of several)
    if resume and p.warm_from == p.step and p.step and rank == 0:
        log(f"resuming at step {p.step} without optimizer moments: lr warms up again over {cfg.warmup} steps")
    loss_mod = LossModule(model, cfg.compile)
    net = nn.parallel.DistributedDataParallel(loss_mod) if world > 1 else loss_mod
    end = min(cfg.total_steps, cfg.stop_at_step or cfg.total_steps)
    carried: MemoryState | None = None  # not saved: a resumed run starts from empty memories
    skipped = 0

    def out_of_time() -> bool:
        return any_rank((time.time() - t0) / 60 > max_minutes, device)

    while p.stage < len(cfg.stages) and p.step < end and not out_of_time():
        stage = cfg.stages[p.stage]
        data = stage_loader(cfg, stage, p.task_weights, model.config, rank, world, p.step, device)
        window: list[dict] = []
        last = time.time()
        for batch in data:
            b = batch.to(device)
            lr = lr_at(cfg, p)
            for g in opt.param_groups:
                g["lr"] = lr
            start = start_memory(model, stage.carry, carried, b.ids.shape[0], device)
            result, carried = train_step(net, model, opt, b, start, stage.final_weight, cfg.clip)
            p.step += 1
            if result is not None:
                window.append(result)
            else:  # one bad batch must not poison the weights (or the carried memories)
                skipped, carried = skipped + 1, None
                if skipped > MAX_SKIPPED:
                    raise RuntimeError(f"training diverged: {skipped} non-finite steps by step {p.step}")
            if window and (p.step % cfg.log_every == 0 or p.step == end):
                now = time.time()
                record = {
                    "step": p.step, "stage": p.stage,
                    **{k: float(torch.stack([w[k] for w in window]).mean()) for k in ("loss", "final_loss", "gnorm")},
                    **exact_by_task(torch.cat([w["exact"] for w in window]), torch.cat([w["task"] for w in window])),
                    "lr": lr, "max_segments": stage.max_segments, "batch": cfg.step_batch(stage),
                    "skipped": skipped, "gpus": world, "sec_per_step": (now - last) / len(window), "minutes": (now - t0) / 60,
                }
                window, last = [], now
                if rank == 0:
                    log(json.dumps(record))
                    with open(out / "log.jsonl", "a") as f:
                        f.write(json.dumps(record) + "\n")
            accuracy = None
            if stage.validates() and p.stage_steps() % cfg.val_every == 0:
                accuracy = validate(model, tok, cfg, p, rank, world)
                if rank == 0:
                    log(json.dumps({"step": p.step, "stage": p.stage, "validation": accuracy}))
            weights = p.task_weights
            stage_over = next_stage(cfg, p, accuracy)
            if rank == 0 and p.step % cfg.save_every == 0:
                save_run(out, model, opt, p)
            if stage_over or p.task_weights != weights or p.step >= end or out_of_time():
                break  # a new stage or task mix needs new batches; the rest ends the run
    if rank == 0:
        save_run(out, model, opt, p)
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1))
    if world > 1:  # no rank leaves the group before rank 0 has saved
        dist.barrier()
    return p.step


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
