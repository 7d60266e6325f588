"""The command line of HunyuanVideo's hyvideo/config.py: every flag, its default and choices."""

import argparse
import re

from .constants import PRECISIONS, PROMPT_TEMPLATE, TEXT_ENCODER_PATH, TOKENIZER_PATH, VAE_PATH
from .modules.models import HUNYUAN_VIDEO_CONFIG


def parse_args(namespace=None):
    parser = argparse.ArgumentParser(description="HunyuanVideo inference script")
    for add in (add_network_args, add_extra_models_args, add_denoise_schedule_args, add_inference_args,
                add_parallel_args):
        parser = add(parser)
    args = parser.parse_args(namespace=namespace)
    return sanity_check_args(args)


def add_network_args(parser):
    group = parser.add_argument_group(title="HunyuanVideo network args")
    group.add_argument("--model", type=str, choices=list(HUNYUAN_VIDEO_CONFIG.keys()),
                       default="HYVideo-T/2-cfgdistill")
    group.add_argument("--latent-channels", type=str, default=16)
    group.add_argument("--precision", type=str, default="bf16", choices=PRECISIONS)
    group.add_argument("--rope-theta", type=int, default=256)
    return parser


def add_extra_models_args(parser):
    group = parser.add_argument_group(title="Extra models args")
    group.add_argument("--vae", type=str, default="884-16c-hy", choices=list(VAE_PATH))
    group.add_argument("--vae-precision", type=str, default="fp16", choices=PRECISIONS)
    group.add_argument("--vae-tiling", action="store_true")
    group.set_defaults(vae_tiling=True)
    group.add_argument("--text-encoder", type=str, default="llm", choices=list(TEXT_ENCODER_PATH))
    group.add_argument("--text-encoder-precision", type=str, default="fp16", choices=PRECISIONS)
    group.add_argument("--text-states-dim", type=int, default=4096)
    group.add_argument("--text-len", type=int, default=256)
    group.add_argument("--tokenizer", type=str, default="llm", choices=list(TOKENIZER_PATH))
    group.add_argument("--prompt-template", type=str, default="dit-llm-encode", choices=PROMPT_TEMPLATE)
    group.add_argument("--prompt-template-video", type=str, default="dit-llm-encode-video", choices=PROMPT_TEMPLATE)
    group.add_argument("--hidden-state-skip-layer", type=int, default=2)
    group.add_argument("--apply-final-norm", action="store_true")
    group.add_argument("--text-encoder-2", type=str, default="clipL", choices=list(TEXT_ENCODER_PATH))
    group.add_argument("--text-encoder-precision-2", type=str, default="fp16", choices=PRECISIONS)
    group.add_argument("--text-states-dim-2", type=int, default=768)
    group.add_argument("--tokenizer-2", type=str, default="clipL", choices=list(TOKENIZER_PATH))
    group.add_argument("--text-len-2", type=int, default=77)
    return parser


def add_denoise_schedule_args(parser):
    group = parser.add_argument_group(title="Denoise schedule args")
    group.add_argument("--denoise-type", type=str, default="flow")
    group.add_argument("--flow-shift", type=float, default=7.0)
    group.add_argument("--flow-reverse", action="store_true")
    group.add_argument("--flow-solver", type=str, default="euler")
    group.add_argument("--use-linear-quadratic-schedule", action="store_true")
    group.add_argument("--linear-schedule-end", type=int, default=25)
    return parser


def add_inference_args(parser):
    group = parser.add_argument_group(title="Inference args")
    group.add_argument("--model-base", type=str, default="ckpts")
    group.add_argument("--dit-weight", type=str,
                       default="ckpts/hunyuan-video-t2v-720p/transformers/mp_rank_00_model_states.pt")
    group.add_argument("--model-resolution", type=str, default="540p", choices=["540p", "720p"])
    group.add_argument("--load-key", type=str, default="module")
    group.add_argument("--use-cpu-offload", action="store_true")
    group.add_argument("--batch-size", type=int, default=1)
    group.add_argument("--infer-steps", type=int, default=50)
    group.add_argument("--disable-autocast", action="store_true")
    group.add_argument("--save-path", type=str, default="./results")
    group.add_argument("--save-path-suffix", type=str, default="")
    group.add_argument("--name-suffix", type=str, default="")
    group.add_argument("--num-videos", type=int, default=1)
    group.add_argument("--video-size", type=int, nargs="+", default=(720, 1280))
    group.add_argument("--video-length", type=int, default=129)
    group.add_argument("--prompt", type=str, default=None)
    group.add_argument("--seed-type", type=str, default="auto", choices=["file", "random", "fixed", "auto"])
    group.add_argument("--seed", type=int, default=None)
    group.add_argument("--neg-prompt", type=str, default=None)
    group.add_argument("--cfg-scale", type=float, default=1.0)
    group.add_argument("--embedded-cfg-scale", type=float, default=6.0)
    group.add_argument("--use-fp8", action="store_true")
    group.add_argument("--reproduce", action="store_true")
    return parser


def add_parallel_args(parser):
    group = parser.add_argument_group(title="Parallel args")
    group.add_argument("--ulysses-degree", type=int, default=1)
    group.add_argument("--ring-degree", type=int, default=1)
    return parser


def sanity_check_args(args):
    vae_pattern = r"\d{2,3}-\d{1,2}c-\w+"
    if not re.match(vae_pattern, args.vae):
        raise ValueError(f"Invalid VAE model: {args.vae}. Must be in the format of '{vae_pattern}'.")
    vae_channels = int(args.vae.split("-")[1][:-1])
    if args.latent_channels is None:
        args.latent_channels = vae_channels
    if vae_channels != args.latent_channels:
        raise ValueError(f"Latent channels ({args.latent_channels}) must match the VAE channels ({vae_channels}).")
    return args
