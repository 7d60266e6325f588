"""TI2V-5B: one DiT on the Wan2.2 VAE's 48-channel latent, fed a per-token timestep."""

from .shared_config import AttrDict, tiny_dit, wan_shared_cfg

ti2v_5B = AttrDict(__name__='Config: Wan TI2V 5B (stand-in)')
ti2v_5B.update(wan_shared_cfg)

ti2v_5B.t5_checkpoint = 'models_t5_umt5-xxl-enc-bf16.pth'
ti2v_5B.t5_tokenizer = 'google/umt5-xxl'

# vae
ti2v_5B.vae_checkpoint = 'Wan2.2_VAE.pth'
ti2v_5B.vae_stride = (4, 16, 16)

# transformer
ti2v_5B.patch_size = (1, 2, 2)
ti2v_5B.update(tiny_dit)

# inference
ti2v_5B.sample_fps = 24
ti2v_5B.sample_shift = 5.0
ti2v_5B.sample_steps = 50
ti2v_5B.sample_guide_scale = 5.0
ti2v_5B.frame_num = 121
