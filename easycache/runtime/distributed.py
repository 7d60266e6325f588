"""Decisions under torch.distributed: every rank must take the same one at every call, so a
sharded DiT (FSDP, sequence parallel) runs on all ranks or on none."""

import torch
import torch.distributed as dist


def distributed_world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def close_distributed() -> None:
    """Tear down the process group the upstream code opened and never closes: a process
    exiting with live gloo threads can abort ("terminate called without an active
    exception") after its work is done, failing the whole torchrun job."""
    if distributed_world() > 1:
        dist.barrier()
        dist.destroy_process_group()


def agree_across_ranks(wants_compute: bool, device: torch.device) -> bool:
    """Compute if any rank wants to: ranks with slightly different statistics never
    diverge, and a sharded model runs on all ranks or none."""
    if distributed_world() == 1:
        return wants_compute
    flag = torch.tensor([int(wants_compute)], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def sum_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over all ranks (statistics of a per-rank token shard)."""
    if distributed_world() == 1:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def max_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``'s elementwise maximum over all ranks (statistics every rank must share)."""
    if distributed_world() == 1:
        return tensor
    largest = tensor.clone()
    dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    return largest


def same_on_all_ranks(values: list):
    """Whether every rank holds the same ``values`` (None on one process). Collective."""
    if distributed_world() == 1:
        return None
    everyone = [None] * distributed_world()
    dist.all_gather_object(everyone, values)
    return all(other == values for other in everyone)
