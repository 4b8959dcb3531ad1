"""The trainer on CPU with a tiny model: runs that stop and resume, the curriculum, the loss."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from conftest import torchrun
from tokenizers import Tokenizer

from longqa.distributed import any_rank
from longqa.errors import InputError
from longqa.input.text import EOS, GEN
from longqa.lab.generate.examples import IGNORE, Batch
from longqa.lab.train import (
    Batches,
    LossModule,
    Progress,
    Stage,
    TrainConfig,
    exact_by_task,
    export,
    load_run_model,
    lr_at,
    next_stage,
    rank_batch,
    rows_exact,
    start_memory,
    train,
)
from longqa.model import ARMTConfig, ARMTModel, MemoryState

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "weights" / "longqa-armt-small" / "tokenizer.json"
NOISE = ROOT / "longqa" / "lab" / "generate" / "data" / "noise-sample.txt"
TINY = {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "segment_len": 64, "n_mem": 4, "d_mem": 8}


def tiny_config(out: Path, stages: list[Stage]) -> TrainConfig:
    return TrainConfig(
        noise=[str(NOISE)], tokenizer=str(TOKENIZER), out=str(out), model=TINY, stages=stages,
        batch=4, warmup=2, workers=0, log_every=1, save_every=100, val_noise=[str(NOISE)], val_every=2, val_samples=4,
    )


def log_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


CONFIGS = sorted(ROOT.glob("training/*.json"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_the_repository_training_configs_load(path: Path) -> None:
    # A config that device_train.sh would only reject on the GPU machine costs device time: check here.
    cfg = TrainConfig.from_json(path)
    assert cfg.stages and all(s.steps > 0 and s.max_segments >= 1 for s in cfg.stages)
    assert all(rank_batch(cfg, s, 4) for s in cfg.stages)  # runs unchanged on 1, 2 or 4 GPUs
    if cfg.init:  # built by the recipe before it (.data is not tracked): docs/training.md says how
        assert f"longqa export {Path(cfg.init).name}" in (ROOT / "docs" / "training.md").read_text().replace("runs/", "")
    else:
        ARMTConfig(vocab_size=4096, **cfg.model)
    for noise in cfg.noise + cfg.val_noise:
        assert noise.startswith(".data/carry/noise/")  # what device_train.sh carries


def test_train_checkpoints_in_bf16_and_resumes_the_same_run(tmp_path: Path) -> None:
    """A run stopped mid-stage (its time is up) and started again goes on where it was: step, stage, the
    stage's start and the lr carry over, as if it had not stopped (training/runs/NAME between sessions)."""
    stages = [Stage(steps=3, max_segments=1, dense=1.0, lr=1e-3), Stage(steps=4, max_segments=2, dense=0.5, lr=6e-4, lr_end=2e-4, carry=1.0)]
    whole = tiny_config(tmp_path / "whole", stages)
    torch.manual_seed(0)
    assert train(whole, max_minutes=5, log=lambda _: None) == 7

    cut = tiny_config(tmp_path / "cut", stages)
    cut.stop_at_step = 5  # two steps into stage 1
    torch.manual_seed(0)
    assert train(cut, max_minutes=5, log=lambda _: None) == 5
    run = Path(cut.out)
    saved = json.loads((run / "trainer.json").read_text())
    assert (saved["step"], saved["stage"], saved["stage_start"]) == (5, 1, 3)
    from safetensors.torch import load_file
    assert all(t.dtype == torch.bfloat16 for f in run.glob("*.safetensors") for t in load_file(f).values())
    cut.stop_at_step = None
    assert train(cut, max_minutes=5, log=lambda _: None) == 7
    a, b = log_rows(Path(whole.out)), log_rows(run)
    assert [(r["step"], r["stage"], r["max_segments"]) for r in a] == [(r["step"], r["stage"], r["max_segments"]) for r in b]
    assert [r["lr"] for r in a] == pytest.approx([r["lr"] for r in b])
    assert [r["lr"] for r in b][3:] == pytest.approx([6e-4, 5e-4, 4e-4, 3e-4])  # stage 1's decay, resumed mid-way


def test_a_resume_without_optimizer_moments_warms_up_again(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(tmp_path / "run", [Stage(steps=2, max_segments=1, dense=1.0, lr=1e-3)])
    train(cfg, max_minutes=5, log=lambda _: None)
    run = Path(cfg.out)
    for shard in run.glob("optimizer-*.safetensors"):
        shard.unlink()
    cfg.stages.append(Stage(steps=2, max_segments=1, dense=1.0, lr=1e-3))  # two more steps
    lines: list[str] = []
    assert train(cfg, max_minutes=5, log=lines.append) == 4
    assert lines[0] == "resuming at step 2 without optimizer moments: lr warms up again over 2 steps"
    assert [r["lr"] for r in log_rows(run)] == pytest.approx([5e-4, 1e-3, 5e-4, 1e-3])
    assert list(run.glob("optimizer-*.safetensors"))  # saved again, so the next resume has them


def test_a_run_can_start_from_a_model_directory(tmp_path: Path) -> None:
    torch.manual_seed(0)
    first = tiny_config(tmp_path / "first", [Stage(steps=2, max_segments=2, dense=1.0, lr=1e-3)])
    train(first, max_minutes=5, log=lambda _: None)
    export(Path(first.out), tmp_path / "exported")
    # lr 0 leaves the weights as they were loaded: the new run starts from the exported ones, at step 0.
    cfg = replace(first, out=str(tmp_path / "second"), model={}, init=str(tmp_path / "exported"),
                  stages=[Stage(steps=1, max_segments=2, dense=1.0, lr=0.0)])
    assert train(cfg, max_minutes=5, log=lambda _: None) == 1
    start, loaded = load_run_model(Path(first.out)).state_dict(), load_run_model(Path(cfg.out)).state_dict()
    assert start.keys() == loaded.keys() and all(torch.equal(start[k], loaded[k]) for k in start)
    with pytest.raises(ValueError, match="leave 'model' out"):
        replace(cfg, model=TINY)


def test_lr_warms_up_then_decays_linearly_within_a_stage(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, [Stage(10, 1, 1.0, lr=1e-3), Stage(10, 1, 1.0, lr=1e-3, lr_end=1e-4)])
    cfg.warmup = 5
    assert lr_at(cfg, Progress(step=0)) == pytest.approx(2e-4)
    assert lr_at(cfg, Progress(step=4)) == pytest.approx(1e-3)
    assert lr_at(cfg, Progress(step=10, stage=1, stage_start=10)) == pytest.approx(1e-3)
    assert lr_at(cfg, Progress(step=15, stage=1, stage_start=10)) == pytest.approx(1e-3 - 0.5 * 9e-4)
    assert lr_at(cfg, Progress(step=99, stage=1, stage_start=10)) == pytest.approx(1e-4)  # past its steps: lr_end
    assert lr_at(cfg, Progress(step=12, warm_from=10)) == pytest.approx(3 / 5 * 1e-3)  # warming up again


def test_a_stage_ends_at_its_bar_on_every_task_or_when_validation_stops_improving(tmp_path: Path) -> None:
    bar = [0.9, 0.9, 0.8, 0.9, 0.9]
    cfg = tiny_config(tmp_path, [Stage(100, 1, 1.0, bar=bar, patience=2, adapt_weights=True), Stage(5, 2, 1.0)])
    acc = lambda *v: dict(zip(("qa1", "qa2", "qa3", "qa4", "qa5"), v))  # noqa: E731
    p = Progress(step=10)
    assert not next_stage(cfg, p, None)  # no validation, steps left: go on
    assert not next_stage(cfg, p, acc(1.0, 0.5, 0.2, 1.0, 0.9))  # QA2, QA3 under the bar
    assert p.task_weights == pytest.approx([0.1, 0.5, 0.7, 0.1, 0.1])  # the floor plus the distance to the bar
    p.step = 20
    assert not next_stage(cfg, p, acc(1.0, 0.6, 0.2, 1.0, 0.9)) and p.since_best == 0  # better by 2 points
    p.step = 30
    assert next_stage(cfg, p, acc(1.0, 0.9, 0.8, 0.9, 0.95))  # every task at its bar
    assert (p.stage, p.stage_start, p.task_weights, p.best) == (1, 30, None, -1.0)
    assert [v["step"] for v in p.validations] == [10, 20, 30]

    q = Progress(step=10)
    for step in (10, 20, 30):  # no better than the first: the second time in a row ends it
        q.step = step
        ended = next_stage(cfg, q, acc(0.5, 0.5, 0.5, 0.5, 0.5))
    assert ended and q.stage == 1
    r = Progress(step=100)
    assert next_stage(cfg, r, None)  # out of steps without a validation


def test_a_validated_stage_ends_early_in_training_and_the_next_one_starts(tmp_path: Path) -> None:
    stages = [Stage(steps=50, max_segments=1, dense=1.0, lr=1e-3, bar=[0.0] * 5), Stage(steps=2, max_segments=2, dense=1.0)]
    cfg = tiny_config(tmp_path / "run", stages)
    lines: list[str] = []
    torch.manual_seed(0)
    assert train(cfg, max_minutes=5, log=lines.append) == 4  # a bar of 0 is reached at the first validation (step 2)
    saved = json.loads((Path(cfg.out) / "trainer.json").read_text())
    assert saved["validations"][0]["step"] == 2 and set(saved["validations"][0]) >= {"qa1", "qa5"}
    assert [(r["step"], r["stage"]) for r in log_rows(Path(cfg.out))] == [(1, 0), (2, 0), (3, 1), (4, 1)]
    with pytest.raises(ValueError, match="names no val_noise"):
        replace(cfg, val_noise=[])


def test_a_steps_batch_is_split_over_the_gpus() -> None:
    cfg = tiny_config(Path("unused"), [Stage(steps=1, max_segments=1, dense=1.0), Stage(steps=1, max_segments=1, dense=1.0, batch=6)])
    assert [rank_batch(cfg, s, 1) for s in cfg.stages] == [4, 6]
    assert [rank_batch(cfg, s, 2) for s in cfg.stages] == [2, 3]
    with pytest.raises(InputError, match="does not split over 4 GPUs"):
        rank_batch(cfg, cfg.stages[1], 4)


def tiny_model_and_batches(cfg: TrainConfig, stage: int = 0) -> tuple[ARMTModel, Iterator[Batch]]:
    """A seeded tiny model with the shipped tokenizer's special tokens, and the trainer's batches for a stage."""
    tok = Tokenizer.from_file(str(TOKENIZER))
    torch.manual_seed(0)
    model = ARMTModel(ARMTConfig(vocab_size=tok.get_vocab_size(), pad_token_id=tok.token_to_id("[PAD]"),
                                 gen_token_id=tok.token_to_id(GEN), eos_token_id=tok.token_to_id(EOS), **TINY))
    with torch.no_grad():  # a memory that is read, so that the memory path has gradients
        for head in model.mem_heads:
            head.read_norm.weight.fill_(1.0)
    return model, iter(Batches(cfg, cfg.stages[stage], None, model.config.segment_len, model.config.pad_token_id, 0, 1, 0))


def empty(model: ARMTModel, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    memory = model.new_memory(b.ids.shape[0], torch.device("cpu"))
    return memory.A, memory.z


@pytest.mark.slow
def test_a_compiled_segment_step_gives_the_eager_loss_and_gradients(tmp_path: Path) -> None:
    # TrainConfig.compile must change the speed of training, not what it learns.
    cfg = tiny_config(tmp_path, [Stage(steps=1, max_segments=3, dense=0.5)])
    model, batches = tiny_model_and_batches(cfg)
    b = next(x for x in batches if x.ids.shape[1] >= 2 * model.config.segment_len)  # a full and a ragged one
    results = []
    torch._dynamo.utils.counters.clear()
    compiled = LossModule(model, True)
    for loss_mod in (LossModule(model, False), compiled):
        model.zero_grad(set_to_none=True)
        loss = loss_mod(b, *empty(model, b))[0]
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # it did compile: full and ragged segments
    (eager_loss, eager_grads), (loss, grads) = results
    torch.testing.assert_close(loss, eager_loss, rtol=1e-4, atol=1e-5)
    assert grads.keys() == eager_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], eager_grads[name], rtol=1e-3, atol=1e-5, msg=name)
    # Batches of other lengths reuse the graphs: two for context segments (full or ragged), the first segment's
    # too, and at most two for question segments (dynamo compiles dynamic shapes on the second shape it sees).
    # Once a stride guard compiled anew for every length, and past dynamo's limit training ran eager unnoticed.
    others = (x for x in batches if x.ids.shape[1] not in (b.ids.shape[1], model.config.segment_len))
    for other in [next(others), next(others), next(others)]:
        compiled(other, *empty(model, other))[0].backward()
    graphs = torch._dynamo.eval_frame._debug_get_cache_entry_list
    assert len(graphs(LossModule._segment.__code__)) == 2
    assert 1 <= len(graphs(LossModule._question.__code__)) <= 2


def test_padding_question_segments_to_their_width_step_changes_no_loss(tmp_path: Path) -> None:
    # examples.QUESTION_WIDTH_STEP pads question segments for the compiler's sake; what they answer must not move.
    model, batches = tiny_model_and_batches(tiny_config(tmp_path, [Stage(steps=1, max_segments=2, dense=0.5, segment_questions=1.0)]))
    b = next(x for x in batches if len(x.mids.lengths))
    trim = replace(b, finals=b.finals.map(lambda t: t[:, : int(b.finals.lengths.max())] if t.dim() == 2 else t),
                   mids=b.mids.map(lambda t: t[:, : int(b.mids.lengths.max())] if t.dim() == 2 else t))
    assert trim.mids.ids.shape[1] < b.mids.ids.shape[1]
    loss_mod = LossModule(model, False)
    torch.testing.assert_close(loss_mod(b, *empty(model, b))[0], loss_mod(trim, *empty(model, trim))[0])


def test_final_weight_gives_the_final_answers_their_own_share_of_the_loss(tmp_path: Path) -> None:
    model, batches = tiny_model_and_batches(tiny_config(tmp_path, [Stage(steps=1, max_segments=3, dense=1.0)]))
    b = next(batches)
    loss_mod = LossModule(model, False)
    pooled, final, *_ = loss_mod(b, *empty(model, b), None)
    inline = loss_mod(b, *empty(model, b), 0.0)[0]  # the inline answers alone
    n_inline, n_final = int((b.labels != IGNORE).sum()), int((b.finals.labels != IGNORE).sum())
    assert n_inline > 0 and n_final > 0
    torch.testing.assert_close(pooled, (inline * n_inline + final * n_final) / (n_inline + n_final))
    torch.testing.assert_close(loss_mod(b, *empty(model, b), 2.0)[0], inline + 2.0 * final)


def test_several_final_questions_each_read_their_own_rows_memory(tmp_path: Path) -> None:
    model, batches = tiny_model_and_batches(tiny_config(tmp_path, [Stage(steps=1, max_segments=2, dense=0.5, final_questions=3)]))
    b = next(batches)
    rows = b.finals.row.tolist()
    assert len(rows) > len(b.ids) and sorted(set(rows)) == list(range(len(b.ids)))
    assert all(rows.count(r) <= 3 for r in rows)
    loss_mod = LossModule(model, False)
    _, final, exact, task, _ = loss_mod(b, *empty(model, b), 1.0)
    assert len(exact) == len(task) == len(rows)
    # The same, one row at a time: each row's questions after that row's context alone.
    summed = 0.0
    for r in range(len(b.ids)):
        q = b.finals.row == r
        finals = b.finals.select(q)
        finals.row = torch.zeros_like(finals.row)
        one = Batch(b.ids[r : r + 1], b.labels[r : r + 1], b.lengths[r : r + 1], finals, b.mids, b.task[q])
        summed += float(loss_mod(one, *empty(model, one), 1.0)[1]) * int((finals.labels != IGNORE).sum())
    torch.testing.assert_close(float(final) * int((b.finals.labels != IGNORE).sum()), summed, rtol=1e-4, atol=1e-4)


def test_segment_questions_read_the_memory_after_their_segment(tmp_path: Path) -> None:
    stage = Stage(steps=1, max_segments=4, dense=0.0, task_weights=[1, 1, 1, 0, 0], segment_questions=1.0)
    model, batches = tiny_model_and_batches(tiny_config(tmp_path, [stage]))
    b = next(b for b in batches if len(b.mids.seg))
    total, final, *_ = LossModule(model, False)(b, *empty(model, b), 1.0)
    # By hand: each segment question reads its row's memory after its segment, and shares the final answers' mean.
    S, mid, n_mid = model.config.segment_len, 0.0, 0
    with torch.no_grad():
        for j, (row, s) in enumerate(zip(b.mids.row.tolist(), b.mids.seg.tolist())):
            memory = model.new_memory(1, torch.device("cpu"))
            for k in range(s + 1):
                memory = model.context_segment(b.ids[row : row + 1, k * S : (k + 1) * S], memory)[1]
            h = model.question_segment(b.mids.ids[j : j + 1], memory, b.mids.lengths[j : j + 1])
            sel = b.mids.labels[j : j + 1] != IGNORE
            mid += float(F.cross_entropy(model.logits(h[sel]), b.mids.labels[j : j + 1][sel], reduction="sum"))
            n_mid += int(sel.sum())
    n_final = int((b.finals.labels != IGNORE).sum())
    torch.testing.assert_close(float(total), (float(final) * n_final + mid) / (n_final + n_mid), rtol=1e-4, atol=1e-4)


def test_start_memory_carries_rows_only_when_asked() -> None:
    model = ARMTModel(ARMTConfig(vocab_size=64, **TINY))
    carried = MemoryState(torch.rand(3, 2, model.config.d_key, 32) + 1, torch.rand(3, 2, model.config.d_key) + 1)
    cpu = torch.device("cpu")
    fresh = start_memory(model, 0.0, carried, 3, cpu)
    assert not fresh.A.any() and not fresh.z.any()
    kept = start_memory(model, 1.0, carried, 3, cpu)
    assert torch.equal(kept.A, carried.A) and torch.equal(kept.z, carried.z)
    assert not kept.A.data_ptr() == carried.A.data_ptr()  # a copy: the next step cannot alias it
    assert not start_memory(model, 1.0, carried, 4, cpu).A.any()  # batch size changed: start empty
    torch.manual_seed(0)
    mixed = start_memory(model, 0.5, MemoryState(carried.A[:1].expand(400, -1, -1, -1), carried.z[:1].expand(400, -1, -1)), 400, cpu)
    assert 0.4 < float((mixed.z.sum((1, 2)) > 0).float().mean()) < 0.6


def test_exact_by_task() -> None:
    exact = torch.tensor([True, False, True, True])
    task = torch.tensor([0, 0, 2, 2])
    assert exact_by_task(exact, task) == {"exact": 0.75, "exact_qa1": 0.5, "exact_qa3": 1.0}


def test_rows_exact_needs_every_supervised_token_right() -> None:
    sel = torch.tensor([[False, True, True], [True, True, False], [False, False, True]])
    hits = torch.tensor([True, True, True, False, True])  # row 1 misses its first answer token
    assert rows_exact(hits, sel).tolist() == [True, False, True]


@pytest.mark.slow
def test_train_under_torchrun_with_two_ranks(tmp_path: Path) -> None:
    """DDP end to end on CPU (gloo): two ranks step together through a validation that ends a stage and a
    carried memory, and rank 0 checkpoints. An unused parameter or a rank out of step would fail or hang here."""
    stages = [Stage(steps=20, max_segments=1, dense=1.0, lr=1e-3, bar=[0.0] * 5), Stage(steps=2, max_segments=3, dense=0.5, carry=1.0)]
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(asdict(tiny_config(tmp_path / "run", stages))))
    done = torchrun("train", config, "--max-minutes", "5")
    # A rank's own error comes first, torchrun's summary last: keep both.
    err = done.stderr.decode()
    assert done.returncode == 0, err[:3000] + "\n...\n" + err[-1500:]
    run = tmp_path / "run"
    assert json.loads((run / "trainer.json").read_text())["step"] == 4
    assert [(r["step"], r["stage"]) for r in log_rows(run)] == [(1, 0), (2, 0), (3, 1), (4, 1)]


def _vote(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    votes = [any_rank(rank == 1, torch.device("cpu")), any_rank(False, torch.device("cpu"))]
    Path(f"{out}.{rank}").write_text(json.dumps(votes))
    dist.destroy_process_group()


def test_any_rank_shares_one_ranks_stop_with_all(tmp_path: Path) -> None:
    mp.spawn(_vote, args=(str(tmp_path / "store"), str(tmp_path / "votes")), nprocs=2)
    assert [json.loads((tmp_path / f"votes.{r}").read_text()) for r in (0, 1)] == [[True, False]] * 2


def test_log_accuracy_averages_each_task_inside_its_window(tmp_path: Path) -> None:
    rows = [{"step": 25, "exact_qa1": 0.2}, {"step": 50, "exact_qa1": 0.4, "exact_qa2": 1.0}, {"step": 75, "exact_qa1": 0.9}]
    log = tmp_path / "run.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = subprocess.run([sys.executable, str(ROOT / "training" / "log_accuracy.py"), str(log), "--windows", "0-50,50-75"],
                          check=True, cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.splitlines()[2:] == ["| 0–50 | 30 / 100 / – / – / – |", "| 50–75 | 90 / – / – / – / – |"]


def test_paired_counts_documents_right_in_one_eval_only_and_tests_the_split(tmp_path: Path) -> None:
    # training/paired.py decides whether a new model ships (docs/training.md).
    def write(name: str, correct: list[bool], questions: str = "ab") -> Path:
        docs = [{"question": questions[i % 2], "correct": c} for i, c in enumerate(correct)]
        path = tmp_path / name
        path.write_text(json.dumps({"cells": [{"task": "qa1", "length": 4000, "documents": docs}]}))
        return path

    a = write("a.json", [True] * 10 + [False] * 10)
    b = write("b.json", [False] * 10 + [True] * 10)
    script = [sys.executable, str(ROOT / "training" / "paired.py")]
    out = subprocess.run([*script, str(a), str(b)], check=True, capture_output=True, text=True).stdout
    assert "| 4000 | 20 | 10 | 10 | 1 |" in out  # an even split
    c = write("c.json", [True] * 20)
    out = subprocess.run([*script, str(a), str(c)], check=True, capture_output=True, text=True).stdout
    assert "| 4000 | 20 | 0 | 10 | 0.002 |" in out  # 2 / 2**10, two-sided
    other = subprocess.run([*script, str(a), str(write("d.json", [True] * 20, "ba"))], capture_output=True, text=True)
    assert other.returncode != 0 and "different documents" in other.stderr


@pytest.mark.slow
def test_train_step_benchmark_runs(tmp_path: Path) -> None:
    # benchmarks/train_step.py picks the batches of the next recipe on the GPU: it must not fail there.
    config, out = tmp_path / "cfg.json", tmp_path / "t.json"
    config.write_text(json.dumps(asdict(tiny_config(tmp_path / "unused", [Stage(steps=1, max_segments=1, dense=1.0)]))))
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_step.py"), str(config), "--segments", "1",
                    "--batches", "2,3", "--steps", "4", "--json", str(out)], check=True, cwd=ROOT, capture_output=True)
    cells = json.loads(out.read_text())["cells"]  # compiled cells (--compile) would add a CPU compile here
    assert [(c["max_segments"], c["batch"], c["compiled"]) for c in cells] == [(1, 2, False), (1, 3, False)]
    assert all(c["sec_per_step"] > 0 for c in cells)
