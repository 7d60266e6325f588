"""Process-group helpers with Wan2.2's names (wan/distributed/util.py upstream), written for the
stand-in; gloo instead of nccl (the stand-in runs on CPU)."""

import torch
import torch.distributed as dist


def init_distributed_group():
    """Initialise the (sequence-parallel) process group from the environment if not yet done."""
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')


def get_rank():
    return dist.get_rank()


def get_world_size():
    return dist.get_world_size()


def all_to_all(x, scatter_dim, gather_dim, group=None, **kwargs):
    """Split ``x`` along ``scatter_dim`` across the ranks and concatenate what they send along
    ``gather_dim`` (gloo has no all_to_all: built from all_gather)."""
    world_size = get_world_size()
    if world_size == 1:
        return x
    pieces = all_gather(x, group=group)
    rank = get_rank()
    mine = [piece.chunk(world_size, dim=scatter_dim)[rank] for piece in pieces]
    return torch.cat(mine, dim=gather_dim).contiguous()


def all_gather(tensor, group=None):
    world_size = dist.get_world_size(group)
    if world_size == 1:
        return [tensor]
    parts = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return parts


def gather_forward(input, dim):
    """Every rank's ``input`` concatenated along ``dim`` (rank order)."""
    if dist.get_world_size() == 1:
        return input
    return torch.cat(all_gather(input), dim=dim).contiguous()
