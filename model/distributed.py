"""Running one training command on one process or many (torchrun): DDP, FSDP, and small helpers.

`python run.py train ...` is a single process. Under `torchrun --nproc-per-node N` the same
command finds RANK / WORLD_SIZE / LOCAL_RANK in the environment, joins the process group (NCCL on
GPUs, gloo on CPUs) and wraps the model:

- "ddp" (tiny, small): DistributedDataParallel. Every rank holds the whole model and averages
  gradients; with equal per-rank batches the averaged gradient is the single-process gradient
  of the global batch.
- "fsdp" (fastwam-5b): FSDP2 (`torch.distributed.fsdp.fully_shard`) over the whole network as
  one unit: parameters, gradients and AdamW state sharded over the ranks, bf16 compute with fp32
  reduction on GPUs. One unit, not one per block, because a Fast-WAM layer runs the video and
  the action block together through their methods (`attention_inputs`, `post_attention`), not
  their `forward`, and FSDP gathers a module's parameters around `forward` (per-block units would
  need `register_fsdp_forward_method` on every block method and gather each block several times
  a layer). The full 6 B bf16 parameters (12 GB) are gathered for the forward and again for the
  backward, which an 80 GB GPU holds; the fp32 master weights and AdamW state (72 GB in all)
  are what sharding spreads. FSDP2 also runs on CPUs with gloo, which is how it is tested here.

Thread ownership: everything here runs on the training process's main thread.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Where this process sits. world_size 1 = plain single process (no process group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None, timeout_s: float = 1800.0) -> DistContext:
    """Join torchrun's process group if the environment says so, else a single-process context.

    device: "cpu", "cuda" or None (cuda when available). Each rank uses cuda:LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size <= 1:
        return DistContext(0, 1, 0, dev, None)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    log.info("rank %d/%d on %s (%s)", rank, world_size, dev, backend)
    return DistContext(rank, world_size, local_rank, dev, backend)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_mean(ctx: DistContext, values: torch.Tensor) -> torch.Tensor:
    """Mean over ranks of a tensor (a copy; the input is untouched)."""
    if not ctx.distributed:
        return values.clone()
    out = values.detach().clone().to(ctx.device)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ctx.world_size


def all_reduce_sum(ctx: DistContext, values: torch.Tensor) -> torch.Tensor:
    if not ctx.distributed:
        return values.clone()
    out = values.detach().clone().to(ctx.device)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def any_rank(ctx: DistContext, flag: bool) -> bool:
    """True when `flag` is True on any rank (a cancel seen by one rank stops all together)."""
    if not ctx.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def broadcast_object(ctx: DistContext, obj, src: int = 0):
    """rank `src`'s picklable object, on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj if ctx.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def main_rank_first(ctx: DistContext, work: Callable[[], T]) -> T:
    """`work()` on rank 0, then (after a barrier) on the others: rank 0 fills what they then
    find done (e.g. a memo of checked files). An error of rank 0's is raised on every rank
    once the others have run it too, so no rank waits for one that has stopped."""
    if not ctx.distributed:
        return work()
    result, failed = None, None
    if ctx.is_main:
        try:
            result = work()
        except Exception as error:  # noqa: BLE001 - raised again after the barrier
            failed = error
    barrier(ctx)
    if failed is not None:
        raise failed
    return result if ctx.is_main else work()


def training_memory(ctx: DistContext, strategy: str) -> tuple[int | None, str]:
    """(bytes, where) a training run's weights, gradients and optimizer state must fit in: the
    GPU's memory (all GPUs together under FSDP, which shards them), else None for this
    machine's memory (`model.config.check_fits_in_memory`)."""
    if ctx.device.type != "cuda":
        return None, "this machine"
    per_gpu = torch.cuda.get_device_properties(ctx.device).total_memory
    if strategy == "fsdp" and ctx.world_size > 1:
        return per_gpu * ctx.world_size, f"the {ctx.world_size} GPUs together (FSDP)"
    return per_gpu, f"the GPU ({torch.cuda.get_device_name(ctx.device)})"


def default_strategy(preset_name: str) -> str:
    """fsdp for the 5 B preset (it does not fit one GPU with AdamW state), ddp otherwise."""
    return "fsdp" if preset_name == "fastwam-5b" else "ddp"


def wrap_model(module: torch.nn.Module, ctx: DistContext, strategy: str, find_unused_parameters: bool = False,
               bf16: bool = False) -> torch.nn.Module:
    """The module as the optimizer and the forward pass should see it on this rank.

    Single process: unchanged. "ddp": DistributedDataParallel (find_unused_parameters for the
    no-video-co-training variant, whose video head takes no gradient). "fsdp": see the module doc.
    """
    if not ctx.distributed:
        return module
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused_parameters)
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
        fully_shard(module, mesh=mesh, mp_policy=policy)
        return module
    raise ValueError(f"unknown distributed strategy {strategy!r}; use 'ddp' or 'fsdp'")


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DDP wrapper (FSDP2 shards the module in place)."""
    return getattr(module, "module", module)


def _is_fsdp(module: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def full_state_dict(module: torch.nn.Module, ctx: DistContext) -> dict[str, torch.Tensor] | None:
    """The whole (unsharded) state dict on rank 0, None elsewhere. Every rank must call it."""
    if _is_fsdp(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return state if ctx.is_main else None
    state = unwrap(module).state_dict()
    return state if ctx.is_main else None


def optimizer_state(module: torch.nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext) -> dict | None:
    """The optimizer's state for a checkpoint: full on rank 0 (gathered under FSDP), None elsewhere."""
    if _is_fsdp(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        state = get_optimizer_state_dict(module, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return state if ctx.is_main else None
    return optimizer.state_dict() if ctx.is_main else None


def load_optimizer_state(module: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Inverse of `optimizer_state` (every rank passes the full state read from the checkpoint)."""
    if _is_fsdp(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(module, optimizer, optim_state_dict=state, options=StateDictOptions(full_state_dict=True))
        return
    optimizer.load_state_dict(state)
