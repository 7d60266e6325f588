#!/usr/bin/env python3
"""EasyCache combined with Sparse VideoGen (SVG) for HunyuanVideo.

SVG (https://github.com/svg-project/Sparse-VideoGen) replaces HunyuanVideo's attention with
sparse spatial/temporal heads; EasyCache skips whole DiT calls. This script runs SVG's copy of
HunyuanVideo (``svg.models.hyvideo`` in SVG 1, kept as ``svg.models.hyvideo_orig`` in SVG 2) with
both, and derives the sparse-attention geometry from the requested size and length instead of
hard-coding 720p:

    context_length = --text-len (256)              text tokens, placed after the video tokens
    num_frame      = (video_length - 1) // 4 + 1   latent frames (causal 3D VAE, 4x in time)
    frame_size     = (height / 16) * (width / 16)  tokens per latent frame (VAE 8x, patch 2)

    720x1280, 129 frames: 256 + 33 x 3600 = 119056 tokens (SVG's own setting)
    544x960,  129 frames: 256 + 33 x 2040 =  67576 tokens

Sizes: SVG's HunyuanVideo kernels (row-sampled mask choice, head placement, FlexAttention block
mask) work in 128-token blocks and take any geometry this script derives, for any size HunyuanVideo
accepts (height and width multiples of 16, 4n+1 frames) whose latent frame holds at least 86 tokens
(the spatial band spans 1.5 frames, floor(3 * frame_size / 256) >= 1 blocks). SVG published and
tuned its HunyuanVideo settings at 720x1280x129 only; 544x960 runs with the derived geometry but
has no published SVG quality numbers. SVG needs a CUDA GPU (Triton, FlexAttention, flash-attn) and
runs on one GPU: under xDiT its blocks fall back to dense attention, so --pattern SVG with
--ulysses-degree/--ring-degree > 1 is refused.

Install SVG as its README says, put this file and ``easycache_sample_video.py`` (the cache and
the checks it shares) in the root of the Sparse-VideoGen checkout, and run from there with the
HunyuanVideo weights (--model-base, --dit-weight):

    python3 hyvideo_svg_easycache.py --video-size 720 1280 --video-length 129 --infer-steps 50 \\
        --prompt "A young man at his 20s is sitting on a piece of cloud in the sky, reading a book." \\
        --embedded-cfg-scale 6.0 --flow-shift 7.0 --flow-reverse --use-cpu-offload --seed 42 \\
        --output_path ./results/svg_easycache.mp4 --pattern SVG --num_sampled_rows 64 --sparsity 0.2 \\
        --first_times_fp 0.055 --first_layers_fp 0.025 --record_attention

Flags: SVG's parser (HunyuanVideo's flags plus --pattern, --num_sampled_rows, --sample_mse_max_row,
--sparsity, --first_times_fp, --first_layers_fp, --record_attention, ... as your SVG version
defines them) and EasyCache's --cache, --thresh (0.025), --ret-steps (5), --overwrite. The video
goes to SVG's output path (--output_path, or --output_file in SVG 2), the report next to it.
"""

import importlib
import importlib.util
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PROG = "hyvideo_svg_easycache.py"
# SVG 1 ships HunyuanVideo as svg.models.hyvideo; SVG 2 keeps that code as hyvideo_orig
# (its svg.models.hyvideo is a diffusers port with another interface)
SVG_PACKAGES = ("svg.models.hyvideo_orig", "svg.models.hyvideo")
SVG_INSTALL = ("install Sparse VideoGen as its README says (https://github.com/svg-project/Sparse-VideoGen: "
               "clone it, pip install -r requirements.txt, pip install flash-attn --no-build-isolation) and "
               "run this script from the root of that checkout")
BLOCK = 128  # SVG's sparse kernels work on 128-token blocks


@dataclass(frozen=True)
class SparseGeometry:
    """The joint token sequence SVG's sparse attention sees: video tokens, then text."""

    context_length: int  # text tokens
    num_frame: int  # latent frames
    frame_size: int  # tokens per latent frame

    @property
    def video_tokens(self) -> int:
        return self.num_frame * self.frame_size

    @property
    def seq_len(self) -> int:
        return self.context_length + self.video_tokens

    @property
    def band_blocks(self) -> int:
        """Half-width, in 128-token blocks, of SVG's sampling masks: 1.5 frames."""
        return (3 * self.frame_size) // (2 * BLOCK)


def derive_geometry(height: int, width: int, video_length: int, text_len: int = 256, vae: str = "884-16c-hy",
                    patch_size=(1, 2, 2)) -> SparseGeometry:
    """The geometry for a requested video, as HunyuanVideo's DiT tokenizes it."""
    if "884" in vae:
        latent_frames = (video_length - 1) // 4 + 1
    elif "888" in vae:
        latent_frames = (video_length - 1) // 8 + 1
    else:
        latent_frames = video_length
    pt, ph, pw = patch_size
    return SparseGeometry(context_length=text_len, num_frame=latent_frames // pt,
                          frame_size=(height // 8 // ph) * (width // 8 // pw))


def sparsity_to_width(sparsity: float, geometry: SparseGeometry) -> float:
    """SVG's diagonal width, in frames, that keeps the fraction ``sparsity`` of the attention map.

    The text rows and columns are always kept (2 * L * C entries); the rest of the budget is a
    band |i - j| < w around the diagonal of the L x L map, which covers 1 - (1 - w/L)^2 of it.
    """
    seq_len, total = geometry.seq_len, geometry.seq_len ** 2
    band_fraction = (sparsity * total - 2 * seq_len * geometry.context_length) / total
    if not 0 < band_fraction <= 1:
        raise ValueError(f"--sparsity {sparsity} leaves no band beyond the text rows and columns "
                         f"(needs {2 * geometry.context_length / seq_len:.4f} < sparsity <= 1)")
    return seq_len * (1 - math.sqrt(1 - band_fraction)) / geometry.frame_size


def sampling_masks(geometry: SparseGeometry, max_rows: int, device="cpu"):
    """SVG's two candidate masks (spatial, temporal), only the first ``max_rows`` rows that its
    per-head choice samples from (the full L x L masks would take tens of GB at 720p).

    Spatial: 128-token blocks within 1.5 frames of each other, in frame-major token order.
    Temporal: the same band in token-major order (a token attends to itself across frames).
    Text rows and columns attend everywhere. Boolean, [rows, seq_len].
    """
    import torch
    rows = min(max_rows, geometry.seq_len)
    video, frames, per_frame = geometry.video_tokens, geometry.num_frame, geometry.frame_size
    r = torch.arange(rows, device=device)[:, None]
    c = torch.arange(geometry.seq_len, device=device)[None, :]
    text = (r >= video) | (c >= video)

    def band(a, b):
        return ((a // BLOCK) - (b // BLOCK)).abs() < geometry.band_blocks

    def token_major(i):  # frame-major index frame * F + token -> token * N + frame
        return (i % per_frame) * frames + i // per_frame
    return [band(r, c) | text, band(token_major(r), token_major(c)) | text]


# ---------------------------------------------------------------------------------------
# Imports: SVG's HunyuanVideo, and the cache from easycache_sample_video.py next to this file.
# ---------------------------------------------------------------------------------------

class SVG:
    """The modules of one SVG layout this script uses."""

    def __init__(self, package: str):
        self.package = package
        self.config = importlib.import_module(f"{package}.config")
        self.inference = importlib.import_module(f"{package}.inference")
        self.file_utils = importlib.import_module(f"{package}.utils.file_utils")
        self.attention = importlib.import_module(f"{package}.modules.attenion")
        self.custom_models = importlib.import_module(f"{package}.modules.custom_models")


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def import_svg() -> SVG:
    """SVG's HunyuanVideo modules; one line naming what to install when they cannot be imported."""
    for root in (os.getcwd(), os.path.dirname(os.path.abspath(__file__))):
        if os.path.isdir(os.path.join(root, "svg")) and root not in sys.path:
            sys.path.insert(0, root)
    if not _has_module("svg"):
        sys.exit(f"{PROG}: error: Sparse VideoGen is not installed (no module named 'svg'); {SVG_INSTALL}")
    package = next((p for p in SVG_PACKAGES if _has_module(f"{p}.config")), None)
    if package is None:
        sys.exit(f"{PROG}: error: this Sparse VideoGen has no HunyuanVideo sampler ({' or '.join(SVG_PACKAGES)}"
                 f".config); {SVG_INSTALL}")
    try:
        return SVG(package)
    except ImportError as error:
        missing = getattr(error, "name", None) or str(error)
        sys.exit(f"{PROG}: error: Sparse VideoGen's HunyuanVideo needs '{missing}', which is not installed; "
                 f"{SVG_INSTALL}")


def import_cache_script():
    """easycache_sample_video.py from this script's directory: the cache, checks and report."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "easycache_sample_video.py")
    if not os.path.isfile(path):
        sys.exit(f"{PROG}: error: easycache_sample_video.py not found next to this script; copy both files "
                 "from the repository's hunyuanvideo/ directory")
    spec = importlib.util.spec_from_file_location("easycache_sample_video", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------

def output_path_of(args):
    """SVG 1 names the video with --output_path, SVG 2 with --output_file."""
    return getattr(args, "output_path", None) or getattr(args, "output_file", None)


def video_paths(args, count: int):
    """One path per video: SVG's output path, numbered when there is more than one."""
    path = output_path_of(args)
    if count == 1:
        return [path]
    root, ext = os.path.splitext(path)
    return [f"{root}_{i}{ext}" for i in range(count)]


def parse_args(svg: SVG, cache_script, argv=None):
    """SVG's parser plus the cache flags; everything checked before any model is loaded."""
    parser = cache_script.upstream_parser(svg.config.parse_args)
    fail = cache_script.one_line_errors(parser, PROG)
    cache_script.add_cache_args(parser, peers=False)  # block-level peers are untested with SVG's blocks
    args = parser.parse_args(argv)
    try:
        args = svg.config.sanity_check_args(args)
    except ValueError as error:
        fail(str(error))
    cache_script.check_args(args, fail, svg.inference)

    if output_path_of(args) is None:
        fail("--output_path (the video file) is required")
    for path in video_paths(args, args.num_videos):
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            fail(f"the directory of {path} does not exist")
        for existing in (path, cache_script.report_path(path)):
            if os.path.exists(existing) and not args.overwrite:
                fail(f"{existing} exists; pass --overwrite to replace it")

    if getattr(args, "pattern", None) == "SVG":
        height, width = cache_script.video_size(args)
        geometry = derive_geometry(height, width, args.video_length, args.text_len, args.vae)
        if args.ulysses_degree * args.ring_degree > 1:
            fail("--pattern SVG runs on one GPU: under --ulysses-degree/--ring-degree > 1 SVG's blocks use "
                 "dense attention")
        if geometry.band_blocks < 1:
            fail(f"--video-size {height} {width}: {geometry.frame_size} tokens per latent frame is too few for "
                 f"SVG's {BLOCK}-token blocks (needs (height/16) x (width/16) >= 86)")
        try:
            sparsity_to_width(args.sparsity, geometry)
        except ValueError as error:
            fail(str(error))
        if args.num_sampled_rows < 1:
            fail(f"--num_sampled_rows must be >= 1, got {args.num_sampled_rows}")
        for name in ("first_times_fp", "first_layers_fp"):
            if not 0 <= getattr(args, name) <= 1:
                fail(f"--{name} must be between 0 and 1, got {getattr(args, name)}")
    return args


def install_sparse_attention(svg: SVG, sampler, args, geometry: SparseGeometry, height: int, width: int) -> dict:
    """SVG's sparse attention for this video's geometry (what SVG's own script does for 720p)."""
    import torch
    transformer = sampler.pipeline.transformer
    attn = svg.attention.Hunyuan_SparseAttn
    device = next(transformer.parameters()).device
    prompt_mask = sampler.get_prompt_mask(
        prompt=args.prompt, height=height, width=width,
        video_length=args.video_length, negative_prompt=args.neg_prompt, infer_steps=args.infer_steps,
        guidance_scale=args.cfg_scale, num_videos_per_prompt=args.num_videos,
        embedded_guidance_scale=args.embedded_cfg_scale)
    prompt_length = int(prompt_mask.sum())
    diagonal = sparsity_to_width(args.sparsity, geometry)
    rows = min(args.sample_mse_max_row, geometry.seq_len)
    attn.context_length, attn.num_frame, attn.frame_size = (geometry.context_length, geometry.num_frame,
                                                            geometry.frame_size)
    attn.prompt_length = prompt_length
    attn.num_sampled_rows = args.num_sampled_rows
    attn.sample_mse_max_row = rows  # rows are sampled below this; the masks hold exactly these
    attn.attention_masks = sampling_masks(geometry, rows, device=device)
    attn.first_layers_fp, attn.first_times_fp = args.first_layers_fp, args.first_times_fp
    head_dim = transformer.hidden_size // transformer.heads_num
    attn.block_mask = svg.attention.prepare_flexattention(
        1, transformer.heads_num, head_dim, torch.bfloat16, device, geometry.context_length, prompt_length,
        geometry.num_frame, geometry.frame_size, diag_width=diagonal, multiplier=diagonal)
    svg.custom_models.replace_sparse_forward()
    return {"context_length": geometry.context_length, "num_frame": geometry.num_frame,
            "frame_size": geometry.frame_size, "seq_len": geometry.seq_len, "prompt_length": prompt_length,
            "diagonal_width_frames": diagonal, "sample_mse_max_row": rows}


def run(svg: SVG, cache_script, args) -> dict:
    started = time.perf_counter()
    sampler = svg.inference.HunyuanVideoSampler.from_pretrained(Path(args.model_base), args=args)
    args = sampler.args
    # after the sampler is built: the cache wraps whatever forward the instance has by then
    cache = cache_script.enable_easycache(sampler, args.thresh, args.ret_steps, enabled=args.cache == "easycache")
    transformer = sampler.pipeline.transformer
    for block in list(transformer.double_blocks) + list(transformer.single_blocks):
        block.sparse_args = args
    transformer.sparse_args = args
    height, width = cache_script.video_size(args)
    sparse = None
    if args.pattern == "SVG":
        geometry = derive_geometry(height, width, args.video_length, args.text_len, args.vae)
        sparse = install_sparse_attention(svg, sampler, args, geometry, height, width)
        print(f"SVG geometry: {sparse}")

    outputs = sampler.predict(
        prompt=args.prompt, height=height, width=width, video_length=args.video_length, seed=args.seed,
        negative_prompt=args.neg_prompt, infer_steps=args.infer_steps, guidance_scale=args.cfg_scale,
        num_videos_per_prompt=args.num_videos, flow_shift=args.flow_shift, batch_size=args.batch_size,
        embedded_guidance_scale=args.embedded_cfg_scale)
    samples, saved = outputs["samples"], []
    if "LOCAL_RANK" not in os.environ or int(os.environ["LOCAL_RANK"]) == 0:
        save = cache_script.atomic_saver(svg.file_utils.save_videos_grid, args, saved)
        for sample, path in zip(samples, video_paths(args, len(samples))):
            save(sample.unsqueeze(0), path, fps=24)
    suffix = f" with SVG (sparsity {args.sparsity})" if sparse else f" with SVG pattern {args.pattern}"
    return cache_script.finish_report(cache, args, saved, time.perf_counter() - started, title_suffix=suffix,
                                      extra={"svg": {"package": svg.package, "pattern": args.pattern,
                                                     **(sparse or {})}})


def main(argv=None) -> None:
    svg = import_svg()
    cache_script = import_cache_script()
    args = parse_args(svg, cache_script, argv)
    try:
        run(svg, cache_script, args)
    except cache_script.OutputError as error:
        sys.exit(f"{PROG}: error: {error}")


if __name__ == "__main__":
    main()
