"""Settings every Wan2.2 task shares (wan/configs/shared_config.py upstream), with the stand-in's
tiny model sizes. ``AttrDict`` stands in for ``easydict.EasyDict``: a dict whose keys read and
write as attributes."""

import torch


class AttrDict(dict):
    """A dict with attribute access (what the pipelines and generate.py use of EasyDict)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None


wan_shared_cfg = AttrDict()

# text encoder (the stand-in's is a tiny embedding model; the names are Wan2.2's)
wan_shared_cfg.t5_model = 'umt5_xxl'
wan_shared_cfg.t5_dtype = torch.bfloat16
wan_shared_cfg.text_len = 16  # upstream: 512

# transformer
wan_shared_cfg.param_dtype = torch.bfloat16

# inference
wan_shared_cfg.num_train_timesteps = 1000
wan_shared_cfg.sample_fps = 16
wan_shared_cfg.sample_neg_prompt = 'blurry, static, overexposed, low quality, artifacts, deformed'
wan_shared_cfg.frame_num = 81

# the stand-in DiT's sizes (upstream: dim 5120, ffn_dim 13824, freq_dim 256, 40 heads, 40 layers)
tiny_dit = dict(dim=32, ffn_dim=64, freq_dim=32, text_dim=16, num_heads=2, num_layers=2, window_size=(-1, -1),
                qk_norm=True, cross_attn_norm=True, eps=1e-6)
