"""The constants hyvideo/config.py's choices are built from."""

import torch

PRECISION_TO_TYPE = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISIONS = {"fp32", "fp16", "bf16"}
VAE_PATH = {"884-16c-hy": "./ckpts/hunyuan-video-t2v-720p/vae"}
TEXT_ENCODER_PATH = {"clipL": "./ckpts/text_encoder_2", "llm": "./ckpts/text_encoder"}
TOKENIZER_PATH = {"clipL": "./ckpts/text_encoder_2", "llm": "./ckpts/text_encoder"}
PROMPT_TEMPLATE = {"dit-llm-encode": {"crop_start": 36}, "dit-llm-encode-video": {"crop_start": 95}}
NEGATIVE_PROMPT = "Aerial view, overexposed, low quality, deformation"
