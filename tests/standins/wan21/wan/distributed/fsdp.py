"""``shard_model`` as Wan2.1 has it (wan/distributed/fsdp.py): the DiT wrapped in
torch's FullyShardedDataParallel, whose ``.module`` is the model. On CPU (tests) it
runs over gloo."""

import torch
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP


def shard_model(model, device_id=None):
    device = torch.device("cpu") if not torch.cuda.is_available() else torch.device("cuda", device_id)
    return FSDP(model, device_id=device, sync_module_states=False)
