"""Stand-in for Wan2.1's generate.py: the same flags and defaults, the same ``_parse_args``
/ ``_validate_args`` / ``generate(args)`` structure, pipelines built through ``wan.<Class>``
and videos saved through ``cache_video`` / ``cache_image`` from this module's namespace.
Sequence parallel (``--ulysses_size``/``--ring_size`` > 1) sets up xfuser's parallel state on
the process group opened here, as Wan2.1 does (``init_distributed_environment``,
``initialize_model_parallel(sequence_parallel_degree=..., ring_degree=..., ulysses_degree=...)``).
Differences: gloo instead of nccl when there is no GPU (and xDiT run on CPUs through the test
suite's patches, tests/xdit_cpu.py); an ImportError saying what to install when xfuser is
missing; no prompt extension models.
"""

import argparse
import logging
import os
import random
import sys
from datetime import datetime

import torch
import torch.distributed as dist
from PIL import Image

import wan
from wan.configs import MAX_AREA_CONFIGS, SIZE_CONFIGS, SUPPORTED_SIZES, WAN_CONFIGS
from wan.utils.utils import cache_image, cache_video, str2bool

# a stand-in: it runs on the CPU (the drop-in script lets a checkout that says so run without a GPU)
RUNS_ON_CPU = True

EXAMPLE_PROMPT = {
    "t2v-1.3B": {"prompt": "Two cats box on a stage."},
    "t2v-14B": {"prompt": "Two cats box on a stage."},
    "t2i-14B": {"prompt": "A portrait."},
    "i2v-14B": {"prompt": "A cat on a surfboard.", "image": "examples/i2v_input.JPG"},
    "flf2v-14B": {"prompt": "A bird takes off.", "first_frame": "examples/flf2v_input_first_frame.png",
                  "last_frame": "examples/flf2v_input_last_frame.png"},
    "vace-1.3B": {"prompt": "A girl plays with a snake.", "src_ref_images": "examples/girl.png,examples/snake.png"},
    "vace-14B": {"prompt": "A girl plays with a snake.", "src_ref_images": "examples/girl.png,examples/snake.png"},
}


def _validate_args(args):
    assert args.ckpt_dir is not None, "Please specify the checkpoint directory."
    assert args.task in WAN_CONFIGS, f"Unsupport task: {args.task}"
    assert args.task in EXAMPLE_PROMPT, f"Unsupport task: {args.task}"
    if args.sample_steps is None:
        args.sample_steps = 40 if "i2v" in args.task else 50
    if args.sample_shift is None:
        args.sample_shift = 5.0
        if "i2v" in args.task and args.size in ["832*480", "480*832"]:
            args.sample_shift = 3.0
        elif "flf2v" in args.task or "vace" in args.task:
            args.sample_shift = 16
    if args.frame_num is None:
        args.frame_num = 1 if "t2i" in args.task else 81
    if "t2i" in args.task:
        assert args.frame_num == 1, f"Unsupport frame_num {args.frame_num} for task {args.task}"
    args.base_seed = args.base_seed if args.base_seed >= 0 else random.randint(0, sys.maxsize)
    assert args.size in SUPPORTED_SIZES[args.task], (
        f"Unsupport size {args.size} for task {args.task}, supported sizes are: "
        f"{', '.join(SUPPORTED_SIZES[args.task])}")


def _parse_args():
    parser = argparse.ArgumentParser(description="Generate a image or video from a text prompt or image using Wan")
    parser.add_argument("--task", type=str, default="t2v-14B", choices=list(WAN_CONFIGS.keys()))
    parser.add_argument("--size", type=str, default="1280*720", choices=list(SIZE_CONFIGS.keys()))
    parser.add_argument("--frame_num", type=int, default=None)
    parser.add_argument("--ckpt_dir", type=str, default=None)
    parser.add_argument("--offload_model", type=str2bool, default=None)
    parser.add_argument("--ulysses_size", type=int, default=1)
    parser.add_argument("--ring_size", type=int, default=1)
    parser.add_argument("--t5_fsdp", action="store_true", default=False)
    parser.add_argument("--t5_cpu", action="store_true", default=False)
    parser.add_argument("--dit_fsdp", action="store_true", default=False)
    parser.add_argument("--save_file", type=str, default=None)
    parser.add_argument("--src_video", type=str, default=None)
    parser.add_argument("--src_mask", type=str, default=None)
    parser.add_argument("--src_ref_images", type=str, default=None)
    parser.add_argument("--prompt", type=str, default=None)
    parser.add_argument("--use_prompt_extend", action="store_true", default=False)
    parser.add_argument("--prompt_extend_method", type=str, default="local_qwen", choices=["dashscope", "local_qwen"])
    parser.add_argument("--prompt_extend_model", type=str, default=None)
    parser.add_argument("--prompt_extend_target_lang", type=str, default="zh", choices=["zh", "en"])
    parser.add_argument("--base_seed", type=int, default=-1)
    parser.add_argument("--image", type=str, default=None)
    parser.add_argument("--first_frame", type=str, default=None)
    parser.add_argument("--last_frame", type=str, default=None)
    parser.add_argument("--sample_solver", type=str, default='unipc', choices=['unipc', 'dpm++'])
    parser.add_argument("--sample_steps", type=int, default=None)
    parser.add_argument("--sample_shift", type=float, default=None)
    parser.add_argument("--sample_guide_scale", type=float, default=5.0)
    args = parser.parse_args()
    _validate_args(args)
    return args


def _init_logging(rank):
    if rank == 0:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(levelname)s: %(message)s",
                            handlers=[logging.StreamHandler(stream=sys.stdout)])
    else:
        logging.basicConfig(level=logging.ERROR)


def generate(args):
    rank = int(os.getenv("RANK", 0))
    world_size = int(os.getenv("WORLD_SIZE", 1))
    local_rank = int(os.getenv("LOCAL_RANK", 0))
    device = local_rank
    _init_logging(rank)

    if args.offload_model is None:
        args.offload_model = False if world_size > 1 else True
    if world_size > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size)
    else:
        assert not (args.t5_fsdp or args.dit_fsdp), "t5_fsdp and dit_fsdp are not supported in non-distributed environments."
        assert not (args.ulysses_size > 1 or args.ring_size > 1), "context parallel are not supported in non-distributed environments."
    if args.ulysses_size > 1 or args.ring_size > 1:
        assert args.ulysses_size * args.ring_size == world_size, "The number of ulysses_size and ring_size should be equal to the world size."
        # upstream: from xfuser.core.distributed import init_distributed_environment, initialize_model_parallel
        from wan.distributed.xdit_context_parallel import xfuser_distributed
        xfuser_dist = xfuser_distributed()
        xfuser_dist.init_distributed_environment(rank=dist.get_rank(), world_size=dist.get_world_size())
        xfuser_dist.initialize_model_parallel(
            sequence_parallel_degree=dist.get_world_size(),
            ring_degree=args.ring_size,
            ulysses_degree=args.ulysses_size,
        )

    cfg = WAN_CONFIGS[args.task]
    if args.ulysses_size > 1:
        assert cfg.num_heads % args.ulysses_size == 0, \
            f"--ulysses_size {args.ulysses_size} must divide the model's {cfg.num_heads} attention heads"
    if dist.is_initialized():
        base_seed = [args.base_seed] if rank == 0 else [None]
        dist.broadcast_object_list(base_seed, src=0)
        args.base_seed = base_seed[0]

    if args.prompt is None:
        args.prompt = EXAMPLE_PROMPT[args.task]["prompt"]
    common = dict(config=cfg, checkpoint_dir=args.ckpt_dir, device_id=device, rank=rank, t5_fsdp=args.t5_fsdp,
                  dit_fsdp=args.dit_fsdp, use_usp=(args.ulysses_size > 1 or args.ring_size > 1), t5_cpu=args.t5_cpu)
    sampling = dict(frame_num=args.frame_num, shift=args.sample_shift, sample_solver=args.sample_solver,
                    sampling_steps=args.sample_steps, guide_scale=args.sample_guide_scale, seed=args.base_seed,
                    offload_model=args.offload_model)
    if "t2v" in args.task or "t2i" in args.task:
        pipe = wan.WanT2V(**common)
        video = pipe.generate(args.prompt, size=SIZE_CONFIGS[args.size], **sampling)
    elif "i2v" in args.task:
        img = Image.open(args.image).convert("RGB")
        pipe = wan.WanI2V(**common)
        video = pipe.generate(args.prompt, img, max_area=MAX_AREA_CONFIGS[args.size], **sampling)
    elif "flf2v" in args.task:
        first_frame = Image.open(args.first_frame).convert("RGB")
        last_frame = Image.open(args.last_frame).convert("RGB")
        pipe = wan.WanFLF2V(**common)
        video = pipe.generate(args.prompt, first_frame, last_frame, max_area=MAX_AREA_CONFIGS[args.size], **sampling)
    elif "vace" in args.task:
        pipe = wan.WanVace(**common)
        src_video, src_mask, src_ref_images = pipe.prepare_source(
            [args.src_video], [args.src_mask],
            [None if args.src_ref_images is None else args.src_ref_images.split(',')],
            args.frame_num, SIZE_CONFIGS[args.size], device)
        video = pipe.generate(args.prompt, src_video, src_mask, src_ref_images, size=SIZE_CONFIGS[args.size],
                              **sampling)
    else:
        raise ValueError(f"Unkown task type: {args.task}")

    if rank == 0:
        if args.save_file is None:
            formatted_time = datetime.now().strftime("%Y%m%d_%H%M%S")
            formatted_prompt = args.prompt.replace(" ", "_").replace("/", "_")[:50]
            suffix = '.png' if "t2i" in args.task else '.mp4'
            args.save_file = (f"{args.task}_{args.size}_{args.ulysses_size}_{args.ring_size}_"
                              f"{formatted_prompt}_{formatted_time}" + suffix)
        if "t2i" in args.task:
            cache_image(tensor=video.squeeze(1)[None], save_file=args.save_file, nrow=1, normalize=True,
                        value_range=(-1, 1))
        else:
            cache_video(tensor=video[None], save_file=args.save_file, fps=cfg.sample_fps, nrow=1, normalize=True,
                        value_range=(-1, 1))
    logging.info("Finished.")


if __name__ == "__main__":
    args = _parse_args()
    generate(args)
