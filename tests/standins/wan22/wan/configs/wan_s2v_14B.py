"""S2V-14B: the settings generate.py reads; the pipeline itself is not part of the stand-in."""

from .shared_config import AttrDict, tiny_dit, wan_shared_cfg

s2v_14B = AttrDict(__name__='Config: Wan S2V 14B (stand-in)')
s2v_14B.update(wan_shared_cfg)

s2v_14B.t5_checkpoint = 'models_t5_umt5-xxl-enc-bf16.pth'
s2v_14B.t5_tokenizer = 'google/umt5-xxl'

# vae
s2v_14B.vae_checkpoint = 'Wan2.1_VAE.pth'
s2v_14B.vae_stride = (4, 8, 8)

# wav2vec
s2v_14B.wav2vec = "wav2vec2-large-xlsr-53-english"

s2v_14B.num_heads = tiny_dit['num_heads']
# transformer
s2v_14B.transformer = AttrDict(__name__="Config: Transformer config for WanModel_S2V (stand-in)")
s2v_14B.transformer.patch_size = (1, 2, 2)
s2v_14B.transformer.update(tiny_dit)
s2v_14B.transformer.motion_frames = 73
s2v_14B.transformer.cond_dim = 16

# inference
s2v_14B.sample_neg_prompt = 'blurry, shaky hands, static, deformed, low quality'
s2v_14B.drop_first_motion = True
s2v_14B.sample_shift = 3
s2v_14B.sample_steps = 40
s2v_14B.sample_guide_scale = 4.5
