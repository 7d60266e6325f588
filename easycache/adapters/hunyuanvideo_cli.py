"""The command line of the HunyuanVideo scripts (easycache_sample_video.py and the Sparse
VideoGen one): the host's flags for the generated cache flags, the checks HunyuanVideo would
only fail on after loading its models, and the report written next to each video."""

import argparse
import glob
import os
from typing import Callable, Optional

import torch.distributed as dist

from easycache.adapters.hunyuanvideo import (HUNYUAN_BRANCHES, HUNYUAN_DEFAULTS, HUNYUAN_DOUBLE_CACHED,
                                             HUNYUAN_SINGLE_CACHED, HUNYUAN_SINGLE_REFRESH_STEPS,
                                             HUNYUAN_TEACACHE_COEFFICIENTS)
from easycache.cli import (CliHost, RunOutputs, cache_title, check_cache_flags, print_report, report_path,
                           write_recordings, write_reports)
from easycache.outputs import OutputError, folder_problem
from easycache.policies.base import Flag, SettingError

SPATIAL_MULTIPLE = 16  # the VAE downsamples by 8, the DiT patchifies latents by 2


def format_blocks(indices, ranges: bool = True) -> str:
    """1,2,3,5 -> '1-3,5' (or '1,2,3,5')."""
    runs = []
    for i in sorted(indices):
        if ranges and runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def parse_blocks(text: str):
    """'1-3,5' -> [1, 2, 3, 5]; '' -> []. ValueError when malformed."""
    indices = []
    for part in filter(None, text.replace(" ", "").split(",")):
        first, _, last = part.partition("-")
        first, last = int(first), int(last or first)
        if last < first:
            raise ValueError(part)
        indices += range(first, last + 1)
    return sorted(set(indices))


DELTA_PROFILE_FLAGS = (
    Flag("delta_double_cached", "double_cached", str, format_blocks(HUNYUAN_DOUBLE_CACHED),
         "double-stream blocks replaying their delta, e.g. 6-19"),
    Flag("delta_single_cached", "single_cached", str, format_blocks(HUNYUAN_SINGLE_CACHED),
         "single-stream blocks replaying their delta"),
    Flag("delta_single_steps", "single_steps", str, format_blocks(HUNYUAN_SINGLE_REFRESH_STEPS, ranges=False),
         "steps on which the cached single-stream blocks run"),
)


def hunyuan_host(model_configs: Optional[dict] = None, levels=("model", "blocks")) -> CliHost:
    """HunyuanVideo for the generated cache flags: kebab-case flags (snake-case aliases), its
    defaults, TeaCache's published polynomial, and the delta cache's profile per block stack
    (``model_configs``: hyvideo.config's HUNYUAN_VIDEO_CONFIG, the block counts)."""
    def published(policy, setting, settings, args):
        return list(HUNYUAN_TEACACHE_COEFFICIENTS)

    def finish(policy, settings, args):
        if policy != "deltacache":
            return settings
        settings = dict(settings)
        stacks = {}
        config = (model_configs or {}).get(args.model, {})
        for flag, setting, stack, depth in (("--delta-double-cached", "double_cached", "double", "mm_double_blocks_depth"),
                                            ("--delta-single-cached", "single_cached", "single", "mm_single_blocks_depth"),
                                            ("--delta-single-steps", "single_steps", None, None)):
            text = settings.pop(setting)
            try:
                values = parse_blocks(text)
            except ValueError:
                raise SettingError(f"{flag} must be comma-separated indices or ranges like 6-19, got {text}") from None
            limit = config.get(depth) if depth else None
            if limit is not None and not all(0 <= v < limit for v in values):
                raise SettingError(f"{flag}: --model {args.model} has {limit} {stack}-stream blocks (0-{limit - 1})")
            stacks[setting] = values
        return dict(settings, cached={"double": stacks["double_cached"], "single": stacks["single_cached"]},
                    stack_refresh_steps={"single": stacks["single_steps"]})

    return CliHost("HunyuanVideo", HUNYUAN_BRANCHES, HUNYUAN_DEFAULTS, "--infer-steps", kebab=True,
                   omitted={"teacache": frozenset({"use_ret_steps"})}, extra_flags={"deltacache": DELTA_PROFILE_FLAGS},
                   published=published, finish=finish, levels=tuple(levels))


def video_size(args):
    """(height, width) the way HunyuanVideo reads --video-size (one value: square)."""
    size = list(args.video_size)
    return (size[0], size[0]) if len(size) == 1 else tuple(size)


def check_args(args: argparse.Namespace, fail: Callable[[str], None], host: CliHost, inference_module=None) -> None:
    """Everything HunyuanVideo would reject (or silently change) once the models are loaded,
    checked before: each failure is one line and exit 2."""
    check_cache_flags(args, host, fail)
    if args.infer_steps < 1:
        fail(f"--infer-steps must be >= 1, got {args.infer_steps}")
    if len(args.video_size) not in (1, 2):
        fail(f"--video-size takes HEIGHT WIDTH (or one value for both), got {len(args.video_size)} values")
    height, width = video_size(args)
    for name, value in (("height", height), ("width", width)):
        if value <= 0 or value % SPATIAL_MULTIPLE:
            fail(f"--video-size {height} {width}: the {name} must be a positive multiple of {SPATIAL_MULTIPLE} "
                 f"(VAE 8x, patch 2), e.g. 544 960 or 720 1280")
    if args.video_length < 1 or (args.video_length - 1) % 4 or ("888" in args.vae and (args.video_length - 1) % 8):
        step = 8 if "888" in args.vae else 4
        fail(f"--video-length must be {step}n+1 (e.g. 129, 65, 33), got {args.video_length}")
    if not args.prompt:
        fail("--prompt is required")
    if args.num_videos < 1:
        fail(f"--num-videos must be >= 1, got {args.num_videos}")

    if not os.path.isdir(args.model_base):
        fail(f"--model-base {args.model_base} is not a directory (the root of the HunyuanVideo weights)")
    if not os.path.exists(args.dit_weight):
        fail(f"--dit-weight {args.dit_weight} does not exist")
    if os.path.isfile(args.dit_weight) and os.path.getsize(args.dit_weight) == 0:
        fail(f"--dit-weight {args.dit_weight} is empty")
    if os.path.isdir(args.dit_weight) and not glob.glob(os.path.join(args.dit_weight, "*.pt")):
        fail(f"--dit-weight {args.dit_weight} holds no *.pt weights")

    if args.ulysses_degree < 1 or args.ring_degree < 1:
        fail("--ulysses-degree and --ring-degree must be >= 1")
    degree = args.ulysses_degree * args.ring_degree
    if degree > 1:
        if inference_module is not None and getattr(inference_module, "xfuser", None) is None:
            fail("--ulysses-degree/--ring-degree > 1 need xDiT: pip install xfuser")
        if args.use_cpu_offload:
            fail("--use-cpu-offload cannot be combined with --ulysses-degree/--ring-degree > 1")
        world = os.environ.get("WORLD_SIZE")
        if world is None or int(world) != degree:
            fail(f"--ulysses-degree x --ring-degree = {degree}: launch with torchrun --nproc_per_node={degree}"
                 + (f" (WORLD_SIZE is {world})" if world else ""))
        # the engine splits the latent by height, else by width, into one part per rank
        if (height // SPATIAL_MULTIPLE) % degree and (width // SPATIAL_MULTIPLE) % degree:
            fail(f"--video-size {height} {width} cannot be split over {degree} ranks: height/16 ({height // 16}) "
                 f"or width/16 ({width // 16}) must be divisible by {degree}")


def global_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.getenv("RANK", 0))


def finish_report(cache, args, outputs: RunOutputs, total_seconds, title_suffix="", extra=None) -> dict:
    """The run's report: printed on rank 0, written as JSON next to every saved video (and every
    one refused as invalid, which then ends the run with an error); then, on rank 0 and when the
    cache saw the video, what a calibration or diagnosis run recorded."""
    report = cache.report(allow_warnings=True)
    report["total_seconds"] = total_seconds
    report.update(extra or {})
    height, width = video_size(args)
    if global_rank() == 0:
        print_report(f"{cache_title(args)}{title_suffix} report for {height}x{width}, {args.video_length} frames, "
                     f"{args.infer_steps} steps", report, "predict", total_seconds)
    write_reports(outputs.reported, args, report, outputs.refused_paths)
    outputs.raise_if_refused()
    if global_rank() == 0 and not report["warnings"]:
        write_recordings(args, cache, {"video_size": [height, width], "infer_steps": args.infer_steps})
    return report


def atomic_saver(saver, args, outputs: RunOutputs, invalid=lambda: None):
    """``saver(videos, path, ...)`` writing to a temporary name, renamed when complete; nothing is
    written when ``invalid()`` says why the video is invalid."""
    def save(videos, path, *a, **kw):
        path = str(path)
        if os.path.exists(report_path(path)) and not args.overwrite:
            raise OutputError(f"{report_path(path)} exists; pass --overwrite to replace it")
        outputs.save(path, lambda tmp: saver(videos, tmp, *a, **kw), args.overwrite, invalid())
    return save
