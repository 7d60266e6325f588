"""Stand-in for Wan2.2's generate.py (https://github.com/Wan-Video/Wan2.2), written for the tests.

The same flags (names, types, defaults, choices), ``EXAMPLE_PROMPT``'s keys, ``_validate_args``
(its assertions and the defaults it fills from the task's config), and ``generate(args)``: the
offload default, the process group from RANK / WORLD_SIZE / LOCAL_RANK, the base-seed broadcast,
the pipelines built through ``wan.<Class>`` with the real keyword arguments and ``.generate(...)``
called as upstream calls it, ``save_video`` (a global of this module) on rank 0 with the real
default file name, and the process group destroyed at the end. Differences: gloo instead of nccl
and no CUDA calls (the stand-in runs on the CPU); prompt extension, s2v-14B and animate-14B raise
NotImplementedError when used (their flags and configs exist); example prompts are short.
"""

import argparse
import logging
import os
import sys
import warnings
from datetime import datetime

warnings.filterwarnings('ignore')

import random

import torch.distributed as dist
from PIL import Image

import wan
from wan.configs import MAX_AREA_CONFIGS, SIZE_CONFIGS, SUPPORTED_SIZES, WAN_CONFIGS
from wan.distributed.util import init_distributed_group
from wan.utils.prompt_extend import DashScopePromptExpander, QwenPromptExpander
from wan.utils.utils import merge_video_audio, save_video, str2bool


# a stand-in: it runs on the CPU (the drop-in script lets a checkout that says so run without a GPU)
RUNS_ON_CPU = True

EXAMPLE_PROMPT = {
    "t2v-A14B": {
        "prompt": "Two cats in boxing gloves spar on a lit stage.",
    },
    "i2v-A14B": {
        "prompt": "A white cat in sunglasses sits on a surfboard at the beach.",
        "image": "examples/i2v_input.JPG",
    },
    "ti2v-5B": {
        "prompt": "Two cats in boxing gloves spar on a lit stage.",
    },
    "animate-14B": {
        "prompt": "The person in the video moves.",
        "video": "",
        "pose": "",
        "mask": "",
    },
    "s2v-14B": {
        "prompt": "A white cat in sunglasses sits on a surfboard at the beach.",
        "image": "examples/i2v_input.JPG",
        "audio": "examples/talk.wav",
        "tts_prompt_audio": "examples/zero_shot_prompt.wav",
        "tts_prompt_text": "A short sentence the prompt audio says.",
        "tts_text": "A sentence to synthesise.",
    },
}


def _validate_args(args):
    assert args.ckpt_dir is not None, "Please specify the checkpoint directory."
    assert args.task in WAN_CONFIGS, f"Unsupport task: {args.task}"
    assert args.task in EXAMPLE_PROMPT, f"Unsupport task: {args.task}"

    example = EXAMPLE_PROMPT[args.task]
    if args.prompt is None:
        args.prompt = example["prompt"]
    if args.image is None and "image" in example:
        args.image = example["image"]
    if args.audio is None and args.enable_tts is False and "audio" in example:
        args.audio = example["audio"]
    if (args.tts_prompt_audio is None or args.tts_text is None) and args.enable_tts is True and "audio" in example:
        args.tts_prompt_audio = example["tts_prompt_audio"]
        args.tts_prompt_text = example["tts_prompt_text"]
        args.tts_text = example["tts_text"]

    if args.task == "i2v-A14B":
        assert args.image is not None, "Please specify the image path for i2v."

    cfg = WAN_CONFIGS[args.task]
    if args.sample_steps is None:
        args.sample_steps = cfg.sample_steps
    if args.sample_shift is None:
        args.sample_shift = cfg.sample_shift
    if args.sample_guide_scale is None:
        args.sample_guide_scale = cfg.sample_guide_scale
    if args.frame_num is None:
        args.frame_num = cfg.frame_num

    args.base_seed = args.base_seed if args.base_seed >= 0 else random.randint(0, sys.maxsize)
    if 's2v' not in args.task:
        assert args.size in SUPPORTED_SIZES[args.task], (
            f"Unsupport size {args.size} for task {args.task}, supported sizes are: "
            f"{', '.join(SUPPORTED_SIZES[args.task])}")


def _parse_args():
    parser = argparse.ArgumentParser(description="Generate a image or video from a text prompt or image using Wan")
    parser.add_argument("--task", type=str, default="t2v-A14B", choices=list(WAN_CONFIGS.keys()),
                        help="The task to run.")
    parser.add_argument("--size", type=str, default="1280*720", choices=list(SIZE_CONFIGS.keys()),
                        help="The area (width*height) of the generated video.")
    parser.add_argument("--frame_num", type=int, default=None, help="Number of frames (4n+1).")
    parser.add_argument("--ckpt_dir", type=str, default=None, help="The checkpoint directory.")
    parser.add_argument("--offload_model", type=str2bool, default=None,
                        help="Offload the models to CPU after each forward.")
    parser.add_argument("--ulysses_size", type=int, default=1, help="Sequence-parallel size of the DiT.")
    parser.add_argument("--t5_fsdp", action="store_true", default=False, help="Use FSDP for T5.")
    parser.add_argument("--t5_cpu", action="store_true", default=False, help="Place T5 on CPU.")
    parser.add_argument("--dit_fsdp", action="store_true", default=False, help="Use FSDP for the DiT.")
    parser.add_argument("--save_file", type=str, default=None, help="The file to save the video to.")
    parser.add_argument("--prompt", type=str, default=None, help="The prompt.")
    parser.add_argument("--use_prompt_extend", action="store_true", default=False, help="Use prompt extension.")
    parser.add_argument("--prompt_extend_method", type=str, default="local_qwen", choices=["dashscope", "local_qwen"],
                        help="The prompt extension method.")
    parser.add_argument("--prompt_extend_model", type=str, default=None, help="The prompt extension model.")
    parser.add_argument("--prompt_extend_target_lang", type=str, default="zh", choices=["zh", "en"],
                        help="The prompt extension's target language.")
    parser.add_argument("--base_seed", type=int, default=-1, help="The seed.")
    parser.add_argument("--image", type=str, default=None, help="The input image.")
    parser.add_argument("--sample_solver", type=str, default='unipc', choices=['unipc', 'dpm++'], help="The solver.")
    parser.add_argument("--sample_steps", type=int, default=None, help="The sampling steps.")
    parser.add_argument("--sample_shift", type=float, default=None, help="The flow-matching shift.")
    parser.add_argument("--sample_guide_scale", type=float, default=None, help="Classifier-free guidance scale.")
    parser.add_argument("--convert_model_dtype", action="store_true", default=False,
                        help="Convert the DiT parameters' dtype.")

    # animate
    parser.add_argument("--src_root_path", type=str, default=None, help="The preprocessing output path.")
    parser.add_argument("--refert_num", type=int, default=77, help="Frames used for temporal guidance.")
    parser.add_argument("--replace_flag", action="store_true", default=False, help="Use replacement.")
    parser.add_argument("--use_relighting_lora", action="store_true", default=False, help="Use the relighting LoRA.")

    # s2v only
    parser.add_argument("--num_clip", type=int, default=None, help="Number of clips to generate.")
    parser.add_argument("--audio", type=str, default=None, help="Path to the audio file.")
    parser.add_argument("--enable_tts", action="store_true", default=False, help="Synthesise the audio.")
    parser.add_argument("--tts_prompt_audio", type=str, default=None, help="The TTS prompt audio.")
    parser.add_argument("--tts_prompt_text", type=str, default=None, help="The TTS prompt audio's text.")
    parser.add_argument("--tts_text", type=str, default=None, help="The text to synthesise.")
    parser.add_argument("--pose_video", type=str, default=None, help="A pose sequence to drive the video.")
    parser.add_argument("--start_from_ref", action="store_true", default=False,
                        help="Start from the reference image.")
    parser.add_argument("--infer_frames", type=int, default=80, help="Frames per clip (a multiple of 4).")
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
        logging.info(f"offload_model is not specified, set to {args.offload_model}.")
    if world_size > 1:
        # upstream: torch.cuda.set_device(local_rank) and nccl; the stand-in runs on the CPU
        dist.init_process_group(backend="gloo", init_method="env://", rank=rank, world_size=world_size)
    else:
        assert not (args.t5_fsdp or args.dit_fsdp), \
            "t5_fsdp and dit_fsdp are not supported in non-distributed environments."
        assert not (args.ulysses_size > 1), "sequence parallel are not supported in non-distributed environments."

    if args.ulysses_size > 1:
        assert args.ulysses_size == world_size, "The number of ulysses_size should be equal to the world size."
        init_distributed_group()

    if args.use_prompt_extend:
        if args.prompt_extend_method == "dashscope":
            prompt_expander = DashScopePromptExpander(model_name=args.prompt_extend_model, task=args.task,
                                                      is_vl=args.image is not None)
        elif args.prompt_extend_method == "local_qwen":
            prompt_expander = QwenPromptExpander(model_name=args.prompt_extend_model, task=args.task,
                                                 is_vl=args.image is not None, device=rank)
        else:
            raise NotImplementedError(f"Unsupport prompt_extend_method: {args.prompt_extend_method}")

    cfg = WAN_CONFIGS[args.task]
    if args.ulysses_size > 1:
        assert cfg.num_heads % args.ulysses_size == 0, \
            f"`{cfg.num_heads=}` cannot be divided evenly by `{args.ulysses_size=}`."

    logging.info(f"Generation job args: {args}")
    logging.info(f"Generation model config: {cfg}")

    if dist.is_initialized():
        base_seed = [args.base_seed] if rank == 0 else [None]
        dist.broadcast_object_list(base_seed, src=0)
        args.base_seed = base_seed[0]

    logging.info(f"Input prompt: {args.prompt}")
    img = None
    if args.image is not None:
        img = Image.open(args.image).convert("RGB")
        logging.info(f"Input image: {args.image}")

    if args.use_prompt_extend:
        logging.info("Extending prompt ...")
        if rank == 0:
            prompt_output = prompt_expander(args.prompt, image=img, tar_lang=args.prompt_extend_target_lang,
                                            seed=args.base_seed)
            input_prompt = [prompt_output.prompt if prompt_output.status else args.prompt]
        else:
            input_prompt = [None]
        if dist.is_initialized():
            dist.broadcast_object_list(input_prompt, src=0)
        args.prompt = input_prompt[0]
        logging.info(f"Extended prompt: {args.prompt}")

    pipeline_kwargs = dict(config=cfg, checkpoint_dir=args.ckpt_dir, device_id=device, rank=rank,
                           t5_fsdp=args.t5_fsdp, dit_fsdp=args.dit_fsdp, use_sp=(args.ulysses_size > 1),
                           t5_cpu=args.t5_cpu, convert_model_dtype=args.convert_model_dtype)
    if "t2v" in args.task:
        logging.info("Creating WanT2V pipeline.")
        wan_t2v = wan.WanT2V(**pipeline_kwargs)
        logging.info("Generating video ...")
        video = wan_t2v.generate(args.prompt, size=SIZE_CONFIGS[args.size], frame_num=args.frame_num,
                                 shift=args.sample_shift, sample_solver=args.sample_solver,
                                 sampling_steps=args.sample_steps, guide_scale=args.sample_guide_scale,
                                 seed=args.base_seed, offload_model=args.offload_model)
    elif "ti2v" in args.task:
        logging.info("Creating WanTI2V pipeline.")
        wan_ti2v = wan.WanTI2V(**pipeline_kwargs)
        logging.info("Generating video ...")
        video = wan_ti2v.generate(args.prompt, img=img, size=SIZE_CONFIGS[args.size],
                                  max_area=MAX_AREA_CONFIGS[args.size], frame_num=args.frame_num,
                                  shift=args.sample_shift, sample_solver=args.sample_solver,
                                  sampling_steps=args.sample_steps, guide_scale=args.sample_guide_scale,
                                  seed=args.base_seed, offload_model=args.offload_model)
    elif "animate" in args.task:
        logging.info("Creating Wan-Animate pipeline.")
        wan_animate = wan.WanAnimate(**pipeline_kwargs, use_relighting_lora=args.use_relighting_lora)
        logging.info("Generating video ...")
        video = wan_animate.generate(src_root_path=args.src_root_path, replace_flag=args.replace_flag,
                                     refert_num=args.refert_num, clip_len=args.frame_num, shift=args.sample_shift,
                                     sample_solver=args.sample_solver, sampling_steps=args.sample_steps,
                                     guide_scale=args.sample_guide_scale, seed=args.base_seed,
                                     offload_model=args.offload_model)
    elif "s2v" in args.task:
        logging.info("Creating WanS2V pipeline.")
        wan_s2v = wan.WanS2V(**pipeline_kwargs)
        logging.info("Generating video ...")
        video = wan_s2v.generate(input_prompt=args.prompt, ref_image_path=args.image, audio_path=args.audio,
                                 enable_tts=args.enable_tts, tts_prompt_audio=args.tts_prompt_audio,
                                 tts_prompt_text=args.tts_prompt_text, tts_text=args.tts_text,
                                 num_repeat=args.num_clip, pose_video=args.pose_video,
                                 max_area=MAX_AREA_CONFIGS[args.size], infer_frames=args.infer_frames,
                                 shift=args.sample_shift, sample_solver=args.sample_solver,
                                 sampling_steps=args.sample_steps, guide_scale=args.sample_guide_scale,
                                 seed=args.base_seed, offload_model=args.offload_model,
                                 init_first_frame=args.start_from_ref)
    else:
        logging.info("Creating WanI2V pipeline.")
        wan_i2v = wan.WanI2V(**pipeline_kwargs)
        logging.info("Generating video ...")
        video = wan_i2v.generate(args.prompt, img, max_area=MAX_AREA_CONFIGS[args.size], frame_num=args.frame_num,
                                 shift=args.sample_shift, sample_solver=args.sample_solver,
                                 sampling_steps=args.sample_steps, guide_scale=args.sample_guide_scale,
                                 seed=args.base_seed, offload_model=args.offload_model)

    if rank == 0:
        if args.save_file is None:
            formatted_time = datetime.now().strftime("%Y%m%d_%H%M%S")
            formatted_prompt = args.prompt.replace(" ", "_").replace("/", "_")[:50]
            suffix = '.mp4'
            size = args.size.replace('*', 'x') if sys.platform == 'win32' else args.size
            args.save_file = f"{args.task}_{size}_{args.ulysses_size}_{formatted_prompt}_{formatted_time}" + suffix

        logging.info(f"Saving generated video to {args.save_file}")
        save_video(tensor=video[None], save_file=args.save_file, fps=cfg.sample_fps, nrow=1, normalize=True,
                   value_range=(-1, 1))
        if "s2v" in args.task:
            merge_video_audio(video_path=args.save_file, audio_path=args.audio if not args.enable_tts else "tts.wav")
    del video

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

    logging.info("Finished.")


if __name__ == "__main__":
    args = _parse_args()
    generate(args)
