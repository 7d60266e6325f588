"""T2V-A14B: two experts (high noise while t >= boundary * 1000, then low noise)."""

from .shared_config import AttrDict, tiny_dit, wan_shared_cfg

t2v_A14B = AttrDict(__name__='Config: Wan T2V A14B (stand-in)')
t2v_A14B.update(wan_shared_cfg)

t2v_A14B.t5_checkpoint = 'models_t5_umt5-xxl-enc-bf16.pth'
t2v_A14B.t5_tokenizer = 'google/umt5-xxl'

# vae
t2v_A14B.vae_checkpoint = 'Wan2.1_VAE.pth'
t2v_A14B.vae_stride = (4, 8, 8)

# transformer
t2v_A14B.patch_size = (1, 2, 2)
t2v_A14B.update(tiny_dit)
t2v_A14B.low_noise_checkpoint = 'low_noise_model'
t2v_A14B.high_noise_checkpoint = 'high_noise_model'

# inference
t2v_A14B.sample_shift = 12.0
t2v_A14B.sample_steps = 40
t2v_A14B.boundary = 0.875
t2v_A14B.sample_guide_scale = (3.0, 4.0)  # (low noise, high noise)
