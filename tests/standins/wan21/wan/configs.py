"""Task and size tables with Wan2.1's names and keys (wan/configs/__init__.py). The model
is tiny: VAE stride (4, 32, 32) and patch (1, 1, 1) instead of (4, 8, 8) and (1, 2, 2),
so the real sizes (832*480, ...) stay cheap on a CPU."""

from types import SimpleNamespace

import torch

_shared = dict(param_dtype=torch.bfloat16, num_train_timesteps=1000, sample_fps=16,
               sample_neg_prompt="low quality", vae_stride=(4, 32, 32), patch_size=(1, 1, 1), z_dim=4)
t2v_1_3B = SimpleNamespace(__name__="Config: tiny T2V 1.3B", num_heads=2, num_layers=2, **_shared)
t2v_14B = SimpleNamespace(__name__="Config: tiny T2V 14B", num_heads=2, num_layers=2, **_shared)
i2v_14B = SimpleNamespace(__name__="Config: tiny I2V 14B", num_heads=2, num_layers=2, **_shared)

WAN_CONFIGS = {
    't2v-14B': t2v_14B,
    't2v-1.3B': t2v_1_3B,
    'i2v-14B': i2v_14B,
    't2i-14B': t2v_14B,
    'flf2v-14B': i2v_14B,
    'vace-1.3B': t2v_1_3B,
    'vace-14B': t2v_14B,
}

SIZE_CONFIGS = {
    '720*1280': (720, 1280),
    '1280*720': (1280, 720),
    '480*832': (480, 832),
    '832*480': (832, 480),
    '1024*1024': (1024, 1024),
}

MAX_AREA_CONFIGS = {
    '720*1280': 720 * 1280,
    '1280*720': 1280 * 720,
    '480*832': 480 * 832,
    '832*480': 832 * 480,
}

SUPPORTED_SIZES = {
    't2v-14B': ('720*1280', '1280*720', '480*832', '832*480'),
    't2v-1.3B': ('480*832', '832*480'),
    'i2v-14B': ('720*1280', '1280*720', '480*832', '832*480'),
    'flf2v-14B': ('720*1280', '1280*720', '480*832', '832*480'),
    't2i-14B': tuple(SIZE_CONFIGS.keys()),
    'vace-1.3B': ('480*832', '832*480'),
    'vace-14B': ('720*1280', '1280*720', '480*832', '832*480'),
}
