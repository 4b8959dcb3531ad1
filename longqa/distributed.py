"""Running under torchrun: joining the process group, and decisions every rank must take together."""

from __future__ import annotations

import atexit
import gc
import os

import torch
import torch.distributed as dist


def join(device: str = "auto") -> tuple[int, int]:
    """(rank, world size): (0, 1) when run alone; under torchrun, joins the process group (NCCL on GPUs,
    gloo on CPU) and gives each rank its own GPU, so that `auto` picks it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    gpu = torch.cuda.is_available() and device != "cpu"
    if gpu:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if gpu else "gloo")
    atexit.register(_leave)
    return dist.get_rank(), world


def _leave() -> None:
    """Destroys the process group, if one was joined; runs at exit, while the interpreter is still whole.

    A gloo worker thread frees its last finished collective a moment after the rank's final barrier or
    gather, and freeing a tensor that Python made needs the GIL. A rank that went straight from there into
    the interpreter's shutdown sometimes aborted ("terminate called without an active exception"). The
    collection here (~0.2 s on CPU) frees what the run left in cycles and gives the worker that moment.
    """
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any: a rank that stops alone would hang the others' next
    collective (each rank reads its own clock, so a time limit is such a decision)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_interleaved(items: list) -> list:
    """Every rank's items, in the order of the work they were dealt: rank r held positions r, r + world,
    r + 2 * world, ... (a list[r::world] share). The same on every rank; `items` itself when run alone."""
    if not dist.is_initialized():
        return items
    parts: list[list] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(parts, items)
    return [part[i] for i in range(max(map(len, parts))) for part in parts if i < len(part)]
