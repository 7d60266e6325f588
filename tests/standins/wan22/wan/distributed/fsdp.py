"""``shard_model`` with Wan2.2's signature (wan/distributed/fsdp.py upstream), written for the
stand-in: torch's FullyShardedDataParallel around the model, each of ``model.blocks`` its own
FSDP unit, ``.module`` the model. The stand-in runs on the CPU over gloo: ``device_id`` (a GPU
index upstream) is taken as the CPU, and no mixed precision is applied (``param_dtype``,
``reduce_dtype`` and ``buffer_dtype`` are accepted and unused), so sharded runs compute in fp32
like unsharded ones. ``sync_module_states`` is accepted but off: FSDP broadcasts module states
only from a GPU, and the stand-in's weights are the same on every rank anyway."""

import gc
from functools import partial

import torch
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp import ShardingStrategy
from torch.distributed.fsdp.wrap import lambda_auto_wrap_policy


def shard_model(model, device_id, param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                buffer_dtype=torch.float32, process_group=None, sharding_strategy=ShardingStrategy.FULL_SHARD,
                sync_module_states=True, use_lora=False):
    blocks = list(model.blocks)
    return FSDP(
        module=model,
        process_group=process_group,
        sharding_strategy=sharding_strategy,
        auto_wrap_policy=partial(lambda_auto_wrap_policy, lambda_fn=lambda m: any(m is b for b in blocks)),
        mixed_precision=None,
        device_id=torch.device("cpu"),
        sync_module_states=False,
        use_orig_params=bool(use_lora))


def free_model(model):
    del model
    gc.collect()
