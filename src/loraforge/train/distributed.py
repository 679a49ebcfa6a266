"""Multi-process training through torch.distributed (launched by torchrun or accelerate launch).

We do not run our own launcher or collectives: the launcher sets RANK/WORLD_SIZE/MASTER_ADDR, we
join its process group (gloo on CPU, NCCL on GPU) and let DistributedDataParallel average gradients.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal

import torch
import torch.distributed as tdist


def world_size() -> int:
    return tdist.get_world_size() if tdist.is_initialized() else int(os.environ.get("WORLD_SIZE", 1))


def rank() -> int:
    return tdist.get_rank() if tdist.is_initialized() else int(os.environ.get("RANK", 0))


@contextlib.contextmanager
def process_group():
    """Join the launcher's process group, if there is one, and leave it on the way out: a gloo group left to
    the interpreter's teardown can abort the process ("terminate called without an active exception") after a
    finished run. The run's DistributedDataParallel wrapper holds the group too, and it may sit in a reference cycle
    that only the garbage collector frees: collected first, so the group's threads end before the interpreter does.
    A group the caller had already joined is theirs: used, not left."""
    joins = int(os.environ.get("WORLD_SIZE", 1)) > 1 and not tdist.is_initialized()
    if joins:
        tdist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield
    finally:
        if joins and tdist.is_initialized():
            gc.collect()
            tdist.destroy_process_group()


def wrap(module: torch.nn.Module) -> torch.nn.Module:
    if not tdist.is_initialized() or tdist.get_world_size() == 1:
        return module
    return torch.nn.parallel.DistributedDataParallel(module, find_unused_parameters=False)


def no_sync(module: torch.nn.Module, last: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of an accumulation."""
    if last or not hasattr(module, "no_sync"):
        return contextlib.nullcontext()
    return module.no_sync()


def barrier() -> None:
    if tdist.is_initialized():
        tdist.barrier()


def all_reduce_sum(value: float | int) -> float | int:
    if not tdist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    tdist.all_reduce(t)
    return type(value)(t.item())


def same_on_all_ranks(tensors: list[torch.Tensor]) -> bool:
    """Whether every rank holds bit-identical tensors (a cheap checksum, gathered)."""
    if not tdist.is_initialized():
        return True
    local = torch.tensor([float(sum(t.double().sum() for t in tensors)), float(sum(t.double().abs().sum() for t in tensors))],
                         dtype=torch.float64)
    gathered = [torch.zeros_like(local) for _ in range(tdist.get_world_size())]
    tdist.all_gather(gathered, local)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def broadcast_flag(flag: bool) -> bool:
    """True on every rank if it is true on any: all ranks must stop at the same step."""
    if not tdist.is_initialized():
        return flag
    t = torch.tensor([int(flag)])
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item())


class _Stop:
    def __init__(self):
        self.flag = False

    def requested(self) -> bool:
        return broadcast_flag(self.flag)


@contextlib.contextmanager
def graceful_interrupt():
    """The first Ctrl-C (or SIGTERM, which Kubernetes sends before killing a pod) asks the loop to stop
    after the current step; a second Ctrl-C interrupts at once."""
    stop = _Stop()
    previous = {}

    def handler(signum, frame):
        if stop.flag and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.flag = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield stop
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
