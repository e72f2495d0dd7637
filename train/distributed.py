"""Data parallelism over processes started by torchrun: where this process stands, and the few collectives
the trainer needs.

`torchrun --nproc_per_node=N train.py ...` starts N copies of the program with RANK, WORLD_SIZE and
LOCAL_RANK in their environment. `init` reads them and joins the process group: NCCL on CUDA (each rank
drives cuda:LOCAL_RANK), gloo on CPU. Without those variables the run is one process and no process group
exists; every collective below is then a no-op, so the trainer calls them unconditionally and never
branches on the world size.

Why DDP and not FSDP2: every model this repo trains fits on one GPU with its optimiser state, and DDP keeps
a whole replica per rank, so the objectives, the sampler and checkpoints keep using the plain module. FSDP2
(`fully_shard`) is the next step for models that do not fit: it shards parameters, gradients and AdamW state
over the ranks, so checkpoints would need a gather (or distributed checkpointing), the sampler an unsharded
copy or a sharded forward, and `lm_head.weight` read outside the forward would no longer be a full tensor.

Gradients are SUMMED over ranks, not averaged as DDP does by default: every objective already divides by
the count of the whole global step (train/objectives.py), so a rank's loss is its share of the global loss
and the global gradient is the sum of the shares. A summing communication hook does this exactly for any
world size; multiplying each loss by world_size instead would round for sizes that are not powers of two.
"""
from __future__ import annotations

import contextlib
import inspect
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from train.settings import ConfigError


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0  # index of this process among all of them
    world_size: int = 1  # number of processes (one per device)
    local_rank: int = 0  # index on this machine: the GPU this process drives
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where this process trains

    def __post_init__(self):
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"RANK={self.rank} is not in [0, WORLD_SIZE={self.world_size}); launch with torchrun, "
                              f"which sets both")

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, evaluates and writes files."""
        return self.rank == 0


SINGLE = Dist()  # one process, no process group


def init(device: str = "auto", dist_backend: str = "auto") -> Dist:
    """Resolve the device and, under torchrun (WORLD_SIZE > 1), join the process group."""
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise ConfigError("--device=cuda but no CUDA device is available; use --device=cpu or auto")
    on_cuda = device == "cuda" or (device == "auto" and cuda)
    if dist_backend == "nccl" and not on_cuda:
        why = "no CUDA device is available" if not cuda else "--device=cpu"
        raise ConfigError(f"--dist_backend=nccl needs CUDA but {why}; use --dist_backend=gloo (or auto) to train on "
                          f"CPU")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if on_cuda:
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} CUDA "
                              f"device(s); start at most that many processes per node (--nproc_per_node)")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if world > 1:
        name = dist_backend if dist_backend != "auto" else "nccl" if on_cuda else "gloo"
        tdist.init_process_group(name, rank=rank, world_size=world)
    return Dist(rank, world, local, dev)


def destroy(together: bool) -> None:
    """Leave the process group. `together`: every rank is leaving at this point (the run finished, or all
    stopped after the same step), so wait for them first: rank 0 hosts the rendezvous store, and a rank
    still leaving when it exits can abort. After an error on one rank, leave at once: the others may wait
    in a collective this rank will never join, and the launcher stops them when this process exits."""
    if _active():
        if together:
            tdist.barrier()
        tdist.destroy_process_group()


# ------------------------------------------------------------------------------------------ collectives
def _active() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    """This process's rank in the process group (0 when single-process)."""
    return tdist.get_rank() if _active() else 0


def _comm_device() -> torch.device:
    """NCCL reduces CUDA tensors only; gloo is used here with CPU tensors."""
    return torch.device("cuda", torch.cuda.current_device()) if tdist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce(x, op: str = "sum"):
    """Sum or max of `x` (a number or a tensor) over every rank, of x's type and device; x alone when
    single-process. Numbers are reduced in float64, so a sum of per-rank shares keeps its precision."""
    if not _active():
        return x
    is_number = not isinstance(x, torch.Tensor)
    t = torch.tensor(float(x), dtype=torch.float64) if is_number else x.detach().clone()
    t = t.to(_comm_device())
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM if op == "sum" else tdist.ReduceOp.MAX)
    return type(x)(t.item()) if is_number else t.to(x.device)


def sum_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Add up every rank's metrics by name (a name absent on a rank counts 0), in rank 0's order of names.

    Ranks need not hold the same names: rollout metrics ride on one micro-batch of rank 0 only."""
    if not _active():
        return metrics
    every = [None] * tdist.get_world_size()
    tdist.all_gather_object(every, metrics)
    out: dict[str, float] = {}
    for m in every:
        for k, v in m.items():
            out[k] = out.get(k, 0.0) + v
    return out


def broadcast(obj):
    """Rank 0's `obj` on every rank (e.g. a run folder named after rank 0's clock)."""
    if not _active():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj) -> list | None:
    """Every rank's `obj` in rank order on rank 0, None elsewhere; [obj] when single-process."""
    if not _active():
        return [obj]
    out = [None] * tdist.get_world_size() if tdist.get_rank() == 0 else None
    tdist.gather_object(obj, out, dst=0)
    return out


def barrier() -> None:
    if _active():
        tdist.barrier()


@contextlib.contextmanager
def main_first(dist: Dist):
    """Rank 0 runs the block first (it writes the files the block reads: tokenizer, token shards), then the
    other ranks run it and find them there."""
    if not dist.is_main:
        barrier()
    yield
    if dist.is_main:
        barrier()


# ------------------------------------------------------------------------------------------ the model
def _sum_hook(state, bucket):
    """DDP communication hook: all-reduce a bucket of gradients with SUM (DDP's default averages)."""
    return tdist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda fut: fut.value()[0])


class DataParallel:
    """The model as the objectives see it.

    Calling it runs the forward through DDP, which arms DDP's reducer so the backward that follows sums the
    gradients over ranks; every attribute (`lm_head.weight`, `cfg`, `wte`) is the bare module's, which the
    fused loss heads read directly. Everything else (the sampler, evaluation, checkpoints, the reference
    snapshot) is handed the bare module itself. Single-process there is no DDP: calls go to the module.
    """

    def __init__(self, module: nn.Module, dist: Dist):
        self.module = module
        self.ddp = None
        if dist.world_size > 1:
            ids = [dist.device.index] if dist.device.type == "cuda" else None
            # buffers (the RoPE tables) are computed identically on every rank: no broadcast before each
            # forward (the option's name changed in torch 2.13)
            new = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            buffers = {"forward_sync_buffers" if new else "broadcast_buffers": False}
            self.ddp = DistributedDataParallel(module, device_ids=ids, **buffers)
            self.ddp.register_comm_hook(None, _sum_hook)

    def __call__(self, *args, **kwargs):
        return (self.ddp if self.ddp is not None else self.module)(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.module, name)

    def no_sync(self):
        """Accumulate gradients locally (every micro-batch of a step but the last)."""
        return self.ddp.no_sync() if self.ddp is not None else contextlib.nullcontext()
