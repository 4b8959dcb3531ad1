"""Reading-speed benchmark for longqa (issue: fast engine). Prints a table; writes JSON with --json.

In one run, on one device, it measures:
- end-to-end `ask` (read file + tokenize + model + answer) on documents of the given sizes, with
  tokens/s of each stage alone, peak GPU memory and host RSS;
- the plain baseline: the same model eager, fp32, one segment at a time, no graphs (like the reference code);
- the floor: reading FLOPs per token over the matmul rate measured here, plus the per-kernel cost of
  the kernels one segment launches (measured inside a CUDA graph);
- batched throughput of many 16K-token documents (the eval / --each path), and the host producer of
  its steps alone (no model), batched and for one document;
- tokens/s against segment length for the checkpoint's shape.

    python benchmarks/bench.py --sizes 10K,1M,10M,100M --json out.json          # on the GPU box
    python benchmarks/bench.py --sizes 10K,100K --batch-docs 8 --device cpu      # here
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.nn.attention import sdpa_kernel

from longqa.engine import ATTENTION_BACKENDS, Engine, prefetch
from longqa.input.reader import Document, token_stream
from longqa.input.segments import lockstep
from longqa.input.text import question_ids
from longqa.lab.generate.haystack import parse_length
from longqa.model import ARMTConfig, ARMTModel
from longqa.wavefront import WavefrontReader, schedule

ROOT = Path(__file__).resolve().parent.parent


def fmt(rate: float) -> str:
    return f"{rate / 1e6:.2f}M tok/s" if rate >= 1e6 else f"{rate / 1e3:.1f}K tok/s"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB."""
    cur = peak = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            cur = int(line.split()[1]) / 1024
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return cur, peak


def matmul_rate(device: torch.device) -> float:
    """Measured dense matmul FLOP/s in the dtype the engine reads with."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 20 if device.type == "cuda" else 5
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def reading_flops_per_token(c: ARMTConfig) -> float:
    """Multiply-adds x2 of one context segment (S tokens + M memory tokens, memory read and write), per token."""
    T, d, dm, dk, L = c.segment_len + c.n_mem, c.d_model, c.d_mem, c.d_key, c.n_layers
    per_pos = 2 * (3 * d * d + d * d + 3 * d * c.d_ff)  # qkv, proj, SwiGLU
    per_pos += 2 * d * dm + 2 * dk * d + 2 * dk  # memory read: W_Q, phi(q) A, phi(q) z
    per_pos += 2 * 2 * (T / 2) * d  # causal attention: QK^T and AV over T/2 keys on average
    per_mem = 2 * d * dm + 2 * d * d + 2 * d + 2 * 2 * dk * d  # W_K, W_V, beta; lookup of v_old and the A update
    conv = 2 * c.d_model * c.conv_width * c.d_model * c.segment_len  # full causal conv
    return (L * (per_pos * T + per_mem * c.n_mem) + conv) / c.segment_len


def kernels_per_segment(engine: Engine) -> tuple[int, int]:
    """CUDA kernels of one full segment read segment by segment, and of one step of the engine's reader for
    one document (the fast path: a wavefront step, which in steady state also reads one segment; compiled if
    the engine compiles), counted with the profiler."""
    from torch.profiler import ProfilerActivity, profile

    m = engine.model
    ids = torch.randint(3, m.config.vocab_size, (1, m.config.segment_len), device=engine.device)
    memory = m.new_memory(1, engine.device)
    reader = engine._reader(1)
    counts = []
    for step in (lambda: m.context_segment(ids, memory), reader._step):  # _step outside the graph: the profiler sees every kernel
        with torch.inference_mode():
            step()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                step()
                torch.cuda.synchronize()
        counts.append(sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA))
    return counts[0], counts[1]


def graph_kernel_cost(device: torch.device, n: int = 500) -> float:
    """Seconds per tiny kernel replayed inside a CUDA graph: the launch floor of a graphed segment."""
    x = torch.zeros(256, device=device)
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        x.add_(1)
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        for _ in range(n):
            x.add_(1)
    g.replay()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(20):
        g.replay()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / (20 * n)


def random_stream(vocab: int, n_tokens: int, piece: int = 65536, seed: int = 0):
    """Token ids without tokenizing, measures the model alone: int64 arrays, as the tokenizer workers and
    the eval's haystacks hand them to the reader."""
    g = torch.Generator().manual_seed(seed)
    block = torch.randint(3, vocab, (piece,), generator=g).numpy()
    left = n_tokens
    while left > 0:
        yield block[: min(piece, left)]
        left -= piece


def model_rate(engine: Engine, n_tokens: int, batch: int = 1) -> float:
    # The ids are drawn before the clock starts: drawing them costs more than segmenting them.
    ids = [list(random_stream(engine.config.vocab_size, n_tokens // batch, seed=i)) for i in range(batch)]
    mems = [engine.new_memory() for _ in range(batch)]
    engine.read_ids(mems, ids)  # warm-up (and the CUDA graph's capture)
    mems = [engine.new_memory() for _ in range(batch)]
    sync(engine.device)
    t = time.perf_counter()
    engine.read_ids(mems, ids)
    sync(engine.device)
    return n_tokens / (time.perf_counter() - t)


def producer_rate(engine: Engine, batch: int, per_doc: int) -> float:
    """The host side of read_ids on a GPU alone (segmenting, lockstep, the reader's step ids, the prefetch
    thread), no model. The ids are made before the clock starts: eval hands read_ids ready arrays of ids."""
    ids = [list(random_stream(engine.config.vocab_size, per_doc, seed=i)) for i in range(batch)]
    streams = [engine._segments(engine.new_memory(), x) for x in ids]
    reader = engine._reader(batch)
    depth = reader.depth if reader else 1
    t = time.perf_counter()
    n = sum(k for k, _ in prefetch(schedule(lockstep(streams), batch, depth, engine.config.pad_token_id)))
    return n / (time.perf_counter() - t)


def make_document(path: Path, n_tokens: int, engine: Engine) -> int:
    """A text file of about n_tokens tokens: held-out noise repeated (real English, real tokenizer work)."""
    sample = (ROOT / "longqa" / "lab" / "generate" / "data" / "noise-sample.txt").read_text()
    from longqa.input.text import encode_text

    per_char = len(encode_text(engine.tokenizer, sample[:200_000])) / 200_000
    need_chars = int(n_tokens / per_char)
    with open(path, "w") as f:
        written = 0
        while written < need_chars:
            piece = sample[: need_chars - written]
            f.write(piece + "\n")
            written += len(piece) + 1
    return path.stat().st_size


def tokenize_rate(engine: Engine, path: Path) -> tuple[float, int]:
    t = time.perf_counter()
    n = sum(len(x) for x in token_stream(engine.tokenizer, Document(str(path), None)))
    return n / (time.perf_counter() - t), n


def ask_once(engine: Engine, path: Path, question: str) -> tuple[float, int, str]:
    """End to end, as `longqa ask FILE Q` does it in-process."""
    mem = engine.new_memory()
    sync(engine.device)
    t = time.perf_counter()
    engine.read([mem], [[Document(str(path), path.stat().st_size)]])
    answer = engine.answer([mem], [question])[0][0]
    sync(engine.device)
    return time.perf_counter() - t, mem.tokens, answer


def replay_seconds(reader: WavefrontReader, ids: torch.Tensor, steps: int) -> float:
    """Seconds per step of a reader, ids already on the device (no host in the loop)."""
    reader.run(ids)
    sync(ids.device)
    t = time.perf_counter()
    for _ in range(steps):
        reader.run(ids)
    sync(ids.device)
    return (time.perf_counter() - t) / steps


@torch.inference_mode()  # the graph's buffers are inference tensors (Engine.read_ids)
def profile_batched(engine: Engine, batch: int, steps: int = 20) -> tuple[float, str]:
    """Where a batched step's GPU time goes: seconds per graph replay with the ids already on the device
    (no host in the loop), and the profiler's top kernels of one eager wavefront step."""
    from torch.profiler import ProfilerActivity, profile

    m = engine.model
    ids = torch.randint(3, m.config.vocab_size, (batch, m.config.segment_len + 1), device=engine.device)
    ids[:, -1] = 1  # every row has a segment
    reader = engine._reader(batch)
    per_step = replay_seconds(reader, ids, steps)
    eager = WavefrontReader(m, batch, reader.diagonal)
    eager.run(ids)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        eager.run(ids)
        sync(engine.device)
    return per_step, prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=60)


@torch.inference_mode()
def step_rates(engine: Engine, batches: list[int], compiled: list[int], steps: int = 50) -> dict[str, float | None]:
    """GPU tokens/s of the graphed reader steps by batch size, with the ids already on the device: wavefront
    and layer by layer (what chooses engine.WAVEFRONT_MAX_BATCH), and the compiled wavefront step for the
    batch sizes in `compiled` (each costs a compile)."""
    m, S = engine.model, engine.config.segment_len
    out = {}
    kinds = [("wavefront", True, False), ("layer_by_layer", False, False), ("wavefront_compiled", True, True)]
    for batch in batches:
        ids = torch.randint(3, m.config.vocab_size, (batch, S + 1), device=engine.device)
        ids[:, -1] = 1
        for name, diagonal, compile in kinds:
            if compile and batch not in compiled:
                continue
            reader = WavefrontReader(m, batch, diagonal, compile)
            try:
                reader.capture()
            except RuntimeError as e:  # seen once (cudaErrorStreamCaptureInvalidated): keep the rest of the run
                print(f"capture of {name}_b{batch} failed: {str(e).splitlines()[0]}", flush=True)
                out[f"{name}_b{batch}"] = None
                continue
            out[f"{name}_b{batch}"] = batch * S / replay_seconds(reader, ids, steps)
            del reader
    return out


def fast_vs_plain(engine: Engine, model_dir: str, n_docs: int, length: int) -> dict:
    """Answers must not change: the same bAbI haystacks (QA1-QA5, read together, ragged) through the fast path
    and through the plain one (the model segment by segment, eager, same bf16 weights)."""
    import random

    from longqa.lab.generate import babi
    from longqa.lab.generate.haystack import NoiseBank, build

    plain = Engine(model_dir, str(engine.device), use_graphs=False)
    bank = NoiseBank([str(ROOT / "longqa" / "lab" / "generate" / "data" / "noise-sample.txt")], engine.tokenizer)
    rng = random.Random(0)
    samples = [babi.generate(f"qa{1 + i % 5}", rng) for i in range(n_docs)]
    hays = [build(s, bank, engine.tokenizer, length, rng, keep_sentences=False) for s in samples]
    out: dict = {"docs": n_docs, "tokens_each": length}
    answers = []
    for e in (engine, plain):
        mems = [e.new_memory() for _ in hays]
        e.read_ids(mems, [[h.context_ids] for h in hays])
        answers.append((mems, e.answer_pairs([(m, s.question) for m, s in zip(mems, samples)])))
    (fast_m, fast_a), (plain_m, plain_a) = answers
    out["same_answers"] = sum(a == b for a, b in zip(fast_a, plain_a))
    out["correct_fast"] = sum(babi.score(s.task, s.question, a, s.answer) for s, a in zip(samples, fast_a))
    out["correct_plain"] = sum(babi.score(s.task, s.question, a, s.answer) for s, a in zip(samples, plain_a))
    out["max_rel_state_diff"] = max(
        float((f.state.A - p.state.A).norm() / p.state.A.norm()) for f, p in zip(fast_m, plain_m)
    )
    # How near to flipping each answer was: the plain path's margin of its first answer token, for the
    # documents whose answers differ and for all (a bf16 state that differs by ~1 % flips only near-ties).
    margins = [answer_margin(plain, m, s.question) for m, s in zip(plain_m, samples)]
    out["median_margin_plain"] = sorted(margins)[len(margins) // 2]
    out["differing"] = [
        {"doc": i, "fast": a, "plain": b, "margin_plain": margins[i], "margin_fast": answer_margin(engine, fast_m[i], samples[i].question)}
        for i, (a, b) in enumerate(zip(fast_a, plain_a)) if a != b
    ]
    return out


@torch.inference_mode()
def answer_margin(engine: Engine, memory, question: str) -> float:
    """Top-1 minus top-2 logit of the first answer token that `memory` gives for `question`."""
    m = engine.model
    ids = torch.tensor([question_ids(engine.tokenizer, question)], device=engine.device)
    with sdpa_kernel(ATTENTION_BACKENDS):  # as the engine answers
        top = m.logits(m.question_segment(ids, engine._flushed(memory))[0, -1]).topk(2).values
    return float(top[0] - top[1])


def segment_sweep(base: ARMTConfig, tokenizer, device: torch.device, lengths: list[int], n_tokens: int) -> dict[int, float]:
    """Model-only single-document tokens/s of random-init models of the checkpoint's shape, by segment length."""
    out = {}
    for S in lengths:
        cfg = ARMTConfig(**{**base.to_dict(), "segment_len": S})
        eng = Engine.from_model(ARMTModel(cfg), tokenizer, str(device))
        out[S] = model_rate(eng, n_tokens)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "weights" / "longqa-armt-small"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sizes", default="10K,1M,10M,100M")
    ap.add_argument("--baseline-tokens", default="1M", help="tokens for the eager fp32 baseline (it is slow)")
    ap.add_argument("--batch-docs", type=int, default=256, help="16K-token documents read together")
    ap.add_argument("--sweep", default="128,256,512,1024,2048")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile inside the graph")
    ap.add_argument("--profile", action="store_true", help="also profile one batched step (GPU)")
    ap.add_argument("--json")
    args = ap.parse_args()

    engine = Engine(args.model, args.device)
    # Every compiled reader (one per batch size and kind) is a recompile of the same step: more than the default 8
    torch._dynamo.config.recompile_limit = 64
    gc.freeze()  # as the CLI does (cli.make_engine)
    dev = engine.device
    cfg = engine.config
    res: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU x{os.cpu_count()}",
                 "torch": torch.__version__, "threads": torch.get_num_threads(),
                 "config": {k: cfg.to_dict()[k] for k in ("d_model", "n_layers", "segment_len", "n_mem", "d_mem", "vocab_size")}}
    rate = matmul_rate(dev)
    fpt = reading_flops_per_token(cfg)
    res["matmul_tflops"] = rate / 1e12
    res["flops_per_token"] = fpt
    flops_s_per_seg = fpt * cfg.segment_len / rate
    kc = graph_kernel_cost(dev) if dev.type == "cuda" else 0.0
    res["graph_kernel_us"] = kc * 1e6

    def floor(kernels: int) -> float:  # plus the launches of the path that runs: one reader step per segment
        return cfg.segment_len / (flops_s_per_seg + kernels * kc)

    if dev.type == "cuda":
        res["kernels_per_segment_plain"], res["kernels_per_wavefront_step"] = kernels_per_segment(engine)
    res["floor_tokens_per_s"] = floor(res.get("kernels_per_wavefront_step", 0))
    print(f"device {res['device']}  matmul {rate / 1e12:.1f} TFLOP/s  {fpt / 1e6:.1f} MFLOP/token  floor {fmt(res['floor_tokens_per_s'])}  "
          f"kernels: {res.get('kernels_per_segment_plain')} per segment plain, {res.get('kernels_per_wavefront_step')} per wavefront step", flush=True)

    # model alone, ours
    n_model = parse_length(args.baseline_tokens)
    res["model_tokens_per_s"] = model_rate(engine, n_model)
    print(f"model alone (ours): {fmt(res['model_tokens_per_s'])}", flush=True)
    res["asks_compiled"] = args.compile and dev.type == "cuda"
    if res["asks_compiled"]:  # from here on, the asks and the batched rows run compiled, as `--compile` does
        engine.compile, engine._readers = True, {}
        t = time.perf_counter()
        engine._reader(1)
        res["compile_startup_s"] = time.perf_counter() - t
        res["model_compiled_tokens_per_s"] = model_rate(engine, n_model)
        print(f"model alone (compiled + graph): {fmt(res['model_compiled_tokens_per_s'])}; "
              f"compiling and capturing it took {res['compile_startup_s']:.1f} s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        docs = {}
        for name in args.sizes.split(","):
            n = parse_length(name)
            path = Path(tmp) / f"doc-{name}.txt"
            make_document(path, n, engine)
            docs[name] = path
        res["docs"] = []
        # Start the tokenizer pool first and time that apart: its workers import this script again, and
        # with it torch (tokenize_pool.py), which the `longqa` command does not make them do (BENCHMARKS.md).
        warm = max(docs.values(), key=lambda p: p.stat().st_size if p.stat().st_size <= 5e7 else 0)
        t = time.perf_counter()
        tokenize_rate(engine, warm)
        res["tokenizer_pool_warmup_s"] = time.perf_counter() - t
        print(f"tokenizer pool start-up: tokenizing {warm.name} once took {res['tokenizer_pool_warmup_s']:.1f} s", flush=True)
        for name, path in docs.items():
            n = parse_length(name)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            # Tokenizing alone re-reads the file: skip it for the largest documents to save device time.
            tok_rate = tokenize_rate(engine, path)[0] if n <= 10_000_000 else float("nan")
            seconds, tokens, answer = ask_once(engine, path, "Where is Mary?")
            # The first ask of a process pays one-off costs (the answer path's first kernels): time it twice.
            again = ask_once(engine, path, "Where is Mary?")[0] if n <= 100_000 else None
            row = {"size": name, "tokens": tokens, "bytes": path.stat().st_size, "seconds": seconds, "seconds_again": again,
                   "tokens_per_s": tokens / seconds, "tokenize_tokens_per_s": tok_rate,
                   "peak_gpu_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
                   "rss_mb": rss_mb()[0], "answer": answer}
            res["docs"].append(row)
            print(f"ask {name}: {tokens:,} tokens in {seconds:.2f} s{f' (again: {again:.2f} s)' if again else ''} = {fmt(row['tokens_per_s'])} "
                  f"(tokenize alone {fmt(tok_rate) if tok_rate == tok_rate else 'not measured'}) peak GPU {row['peak_gpu_mb']} MB RSS {row['rss_mb']:.0f} MB", flush=True)
            path.unlink()

        # baseline: eager fp32, one segment at a time, no graphs, in the same run
        base = Engine(args.model, str(dev), use_graphs=False)
        base.model.float()
        res["baseline_model_tokens_per_s"] = model_rate(base, n_model)
        print(f"baseline model alone (eager fp32): {fmt(res['baseline_model_tokens_per_s'])}", flush=True)
        del base

    if dev.type == "cuda":
        res["step_rates"] = step_rates(engine, [1, 2, 4, 8, 16, 32, 64, 128], [1, 8, 32, 128] if args.compile else [])
        print("graphed steps alone: " + ", ".join(f"{k} {fmt(v) if v else 'failed'}" for k, v in res["step_rates"].items()), flush=True)
        # Uncompiled, 20 documents read in wavefront steps and 50 in layer-by-layer steps (engine.WAVEFRONT_MAX_BATCH);
        # with --compile, both in compiled wavefront steps
        res["fast_vs_plain"] = [fast_vs_plain(engine, args.model, n, 16_000) for n in (20, 50)]
        print(f"fast vs plain path: {res['fast_vs_plain']}", flush=True)

    # many 16K documents at once
    res["batched_16k_tokens_per_s"] = model_rate(engine, args.batch_docs * 16_000, batch=args.batch_docs)
    print(f"batched {args.batch_docs} x 16K docs: {fmt(res['batched_16k_tokens_per_s'])}", flush=True)
    # the same steps without the model: is the batched row bound by the host?
    res["producer_batched_tokens_per_s"] = producer_rate(engine, args.batch_docs, 16_000)
    res["producer_single_tokens_per_s"] = producer_rate(engine, 1, n_model)
    print(f"host producer alone, {args.batch_docs} x 16K docs: {fmt(res['producer_batched_tokens_per_s'])}; "
          f"1 doc of {args.baseline_tokens}: {fmt(res['producer_single_tokens_per_s'])}", flush=True)

    if args.profile and dev.type == "cuda":
        per_step, top = profile_batched(engine, args.batch_docs)
        res["batched_graph_step_s"] = per_step
        print(f"batched step of {args.batch_docs} x {cfg.segment_len} tokens, graph replay alone: {per_step * 1e3:.2f} ms "
              f"= {fmt(args.batch_docs * cfg.segment_len / per_step)}\n{top}", flush=True)

    if res["asks_compiled"]:
        # Last: after the profiler has seen compiled (Triton) kernels, CUDA graph capture failed in this process
        # (cudaErrorStreamCaptureInvalidated, torch 2.11, H100).
        res["kernels_per_compiled_step"] = kernels_per_segment(engine)[1]
        res["floor_compiled_tokens_per_s"] = floor(res["kernels_per_compiled_step"])
        print(f"compiled step: {res['kernels_per_compiled_step']} kernels, floor {fmt(res['floor_compiled_tokens_per_s'])}", flush=True)

    sweep = [int(x) for x in args.sweep.split(",") if x]
    res["segment_sweep"] = segment_sweep(cfg, engine.tokenizer, dev, sweep, max(200_000, n_model // 4)) if sweep else {}
    for S, r in res["segment_sweep"].items():
        print(f"segment {S}: {fmt(r)}", flush=True)

    big = res["docs"][-1]
    res["ratios"] = {
        "ours_e2e_over_baseline": big["tokens_per_s"] / res["baseline_model_tokens_per_s"],
        "ours_model_over_baseline": res["model_tokens_per_s"] / res["baseline_model_tokens_per_s"],
        "ours_model_over_floor": res["model_tokens_per_s"] / res["floor_tokens_per_s"],
        # the asks ran compiled or not: each against the floor of its own step
        "ours_e2e_over_floor": big["tokens_per_s"] / res.get("floor_compiled_tokens_per_s", res["floor_tokens_per_s"]),
    }
    if "model_compiled_tokens_per_s" in res:
        res["ratios"]["ours_model_compiled_over_floor"] = res["model_compiled_tokens_per_s"] / res["floor_compiled_tokens_per_s"]
    res["peak_rss_mb"] = rss_mb()[1]
    print("\n| measure | value |\n|---|---|")
    for r in res["docs"]:
        print(f"| ask {r['size']} end to end | {fmt(r['tokens_per_s'])} ({r['seconds']:.2f} s; tokenize alone {fmt(r['tokenize_tokens_per_s']) if r['tokenize_tokens_per_s'] == r['tokenize_tokens_per_s'] else 'not measured'}; peak GPU {r['peak_gpu_mb'] and round(r['peak_gpu_mb'])} MB; RSS {r['rss_mb']:.0f} MB) |")
    print(f"| model alone, ours | {fmt(res['model_tokens_per_s'])} |")
    if "model_compiled_tokens_per_s" in res:
        print(f"| model alone, ours compiled | {fmt(res['model_compiled_tokens_per_s'])} (compile {res['compile_startup_s']:.1f} s) |")
        print(f"| floor, compiled step | {fmt(res['floor_compiled_tokens_per_s'])} |")
    print(f"| model alone, baseline (eager fp32) | {fmt(res['baseline_model_tokens_per_s'])} |")
    print(f"| floor | {fmt(res['floor_tokens_per_s'])} |")
    print(f"| batched 16K docs x{args.batch_docs} | {fmt(res['batched_16k_tokens_per_s'])} |")
    print(f"| host producer alone, {args.batch_docs} docs | {fmt(res['producer_batched_tokens_per_s'])} |")
    print(f"| host producer alone, 1 doc | {fmt(res['producer_single_tokens_per_s'])} |")
    for k, v in res["ratios"].items():
        print(f"| {k} | {v:.2f} |")
    print(f"| peak RSS | {res['peak_rss_mb']:.0f} MB |")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
