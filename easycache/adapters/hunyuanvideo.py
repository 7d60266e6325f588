"""HunyuanVideo (https://github.com/Tencent/HunyuanVideo): the pipeline calls its DiT once per step
as ``transformer(x, t, text_states=..., ..., return_dict=True)["x"]``; with ``--cfg-scale > 1``
the unconditional and conditional latents are one batch of 2 in that one call (one decision).
``sampler.predict(..., infer_steps=...)`` makes one video. The DiT runs its double-stream
blocks (``img, txt = block(img, txt, vec, ...)``), then its single-stream blocks
(``x = block(x, vec, ...)``). Under xDiT the sampler binds a sequence-parallel forward on
the instance while it is built, and each rank's blocks see a shard of the image tokens.
"""

import contextlib
import inspect
from typing import Sequence

import torch

from easycache.policies.base import make_policy
from easycache.policies.calibration import MagnitudeRecorder
from easycache.policies.deltacache import DeltaCachePolicy
from easycache.policies.diagnosis import EstimatorRecorder
from easycache.policies.easycache import EasyCachePolicy
from easycache.policies.magcache import MagCachePolicy
from easycache.policies.teacache import TeaCachePolicy
from easycache.runtime.blocks import BlockLayout
from easycache.runtime.model import ModelIO
from easycache.runtime.pipeline import PipelineCache, check_not_enabled, wrap_model
from easycache.runtime.session import Session

HUNYUAN_BRANCHES = ("dit",)
HUNYUAN_FORWARD_ARGS = ("x", "t", "text_states", "text_mask", "text_states_2", "freqs_cos", "freqs_sin",
                        "guidance", "return_dict")
# HunyuanVideo's defaults for each policy where they differ from the policy's own (MagCache's
# are its published HunyuanVideo ones)
HUNYUAN_DEFAULTS = {"easycache": {"threshold": 0.025, "warmup_steps": 5}, "uniform": {"warmup_steps": 5},
                    "teacache": {"threshold": 0.1}, "magcache": {"threshold": 0.24, "max_skips": 6, "branches": 1}}
# TeaCache's published rescaling polynomial for HunyuanVideo (highest power first)
HUNYUAN_TEACACHE_COEFFICIENTS = (7.33226126e+02, -4.01131952e+02, 6.75869174e+01, -3.14987800e+00, 9.61237896e-02)
# the delta cache's published profile: the cached (background) blocks of each stack, and the steps
# on which the single-stream deltas are refreshed (the double-stream range every 6th step)
HUNYUAN_DOUBLE_CACHED = tuple(range(6, 20))
HUNYUAN_SINGLE_CACHED = (0, 2, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 23, 25, 26, 27, 31, 33)
HUNYUAN_SINGLE_REFRESH_STEPS = (6, 18, 26, 32, 38, 42, 46, 48)


def _returns_dict(args, kwargs) -> bool:
    index = HUNYUAN_FORWARD_ARGS.index("return_dict")
    if "return_dict" in kwargs:
        return bool(kwargs["return_dict"])
    return bool(args[index]) if len(args) > index else True


class HunyuanIO(ModelIO):
    """The transformer's latent in, ``{"x": v}`` (or the bare tensor) out; a reused step hands
    the pipeline what a computed one would: same dtype, same device."""

    def __init__(self):
        super().__init__(self._inputs_of, self._outputs_of, self._make_output, self._timestep_of)
        self.output_dtype = self.output_device = None

    @staticmethod
    def _timestep_of(args, kwargs):
        index = HUNYUAN_FORWARD_ARGS.index("t")
        return args[index] if len(args) > index else kwargs.get("t")

    def _inputs_of(self, args, kwargs):
        x = args[0] if args else kwargs["x"]
        self.output_device = x.device
        return [x]

    def _outputs_of(self, result):
        sample = result if isinstance(result, torch.Tensor) else result["x"]
        self.output_dtype, self.output_device = sample.dtype, sample.device
        return [sample]

    def _make_output(self, tensors, args, kwargs):
        sample = tensors[0].to(self.output_dtype) if self.output_dtype is not None else tensors[0]
        return {"x": sample} if _returns_dict(args, kwargs) else sample


def teacache_indicator(transformer):
    """TeaCache's modulated input: the first double block's image modulation (shift, scale of
    img_mod(vec)) applied to its normed image tokens, from that block's call arguments
    (img, txt, vec, ...). Under xDiT the image tokens are this rank's shard."""
    def indicator(block_args, block_kwargs):
        img, vec = block_args[0], block_args[2]
        first = transformer.double_blocks[0]
        shift, scale = first.img_mod(vec).chunk(6, dim=-1)[:2]
        return [first.img_norm1(img) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)]
    return indicator


def hunyuan_block_layout(transformer) -> BlockLayout:
    """Both block stacks, one after the other (a cached segment spans them: the image-token
    residual); the loops are armed by the patch embedding, after xDiT's wrapper has set up
    the blocks' attention."""
    return BlockLayout(lists=[transformer.double_blocks, transformer.single_blocks], names=["double", "single"],
                       carried=[2, 1],
                       indicators={"modulated": lambda hooks: teacache_indicator(transformer)},
                       sharded_indicator=True, arm_on=transformer.img_in)


class HunyuanCache(PipelineCache):
    def __init__(self, *args, io: HunyuanIO, **kwargs):
        self.io = io
        super().__init__(*args, **kwargs)

    def collective_device(self):
        device = self.io.output_device
        # NCCL gathers on the current device; the upstream engine never sets it per rank
        if device is not None and device.type == "cuda":
            return torch.cuda.device(device)
        return contextlib.nullcontext()


def enable_cache(sampler, policy=None, **settings) -> HunyuanCache:
    """Enable a cache on a HunyuanVideoSampler (HunyuanVideo's, or Sparse VideoGen's copy).

    ``policy``: a Policy, the name of a registered one (its settings as keywords;
    HunyuanVideo's defaults fill the rest), or None for the uncached baseline (calls still
    counted and timed). Call it after the sampler is built, so it wraps whatever forward
    ``sampler.pipeline.transformer`` has then: under xDiT the sampler binds its
    sequence-parallel forward on the instance while it is built, and the cache must sit
    outside it. State lives on the returned object and is reset by every ``sampler.predict``
    call; ``.report()`` gives the statistics, ``.disable()`` undoes the wrapping.
    """
    check_not_enabled(sampler)
    if "infer_steps" not in inspect.signature(sampler.predict).parameters:
        raise TypeError(f"{type(sampler).__name__}.predict takes no infer_steps; not a HunyuanVideoSampler")
    policy = make_policy(policy, HUNYUAN_DEFAULTS, **settings)
    session, io = Session(HUNYUAN_BRANCHES), HunyuanIO()
    transformer = sampler.pipeline.transformer

    def steps_of(arguments):
        steps = int(arguments["infer_steps"])
        return steps, {None: (0, steps)}
    return HunyuanCache(sampler, "predict", session,
                        lambda: {None: wrap_model(transformer, policy, session, io,
                                                  lambda: hunyuan_block_layout(transformer))},
                        steps_of, method=policy.name if policy is not None else "none", io=io)


def enable_easycache(sampler, threshold: float = 0.025, warmup_steps: int = 5, enabled: bool = True) -> HunyuanCache:
    """Enable EasyCache on a HunyuanVideoSampler (see ``enable_cache``). ``threshold`` is tau
    (relative L1, 0.025 = 2.5%; 0 computes every step), ``warmup_steps`` the first steps always
    computed (the last step always is). ``enabled=False`` runs every step but still counts and
    times the DiT calls, for a baseline."""
    return enable_cache(sampler, EasyCachePolicy(threshold, warmup_steps) if enabled else None)


def enable_teacache(sampler, threshold: float = 0.1,
                    coefficients: Sequence[float] = HUNYUAN_TEACACHE_COEFFICIENTS) -> HunyuanCache:
    """TeaCache (a peer, for comparison): reuse the image-token residual of both block stacks
    while the rescaled change of the first double block's modulated input stays below
    ``threshold`` (0.1 about 1.6x, 0.15 about 2.1x, as published); first and last step
    computed. Under xDiT its statistics are summed over the ranks' shards."""
    return enable_cache(sampler, TeaCachePolicy(threshold, coefficients))


def enable_magcache(sampler, ratios: Sequence[float], threshold: float = 0.24, max_skips: int = 6,
                    retention_ratio: float = 0.2) -> HunyuanCache:
    """MagCache (a peer, for comparison) with calibrated magnitude ratios, one per step
    (``calibrate_sampler`` records them). Defaults are MagCache's for HunyuanVideo (0.24, K = 6,
    0.2)."""
    return enable_cache(sampler, MagCachePolicy(ratios, threshold, max_skips, retention_ratio, len(HUNYUAN_BRANCHES)))


def enable_deltacache(sampler, double_cached=HUNYUAN_DOUBLE_CACHED, single_cached=HUNYUAN_SINGLE_CACHED,
                      warmup_steps: int = 6, interval: int = 6,
                      single_refresh_steps=HUNYUAN_SINGLE_REFRESH_STEPS) -> HunyuanCache:
    """The profiling-based delta cache (a peer, for comparison): after the first ``warmup_steps``
    steps, the ``double_cached`` double-stream blocks replay their stored deltas (of img and txt)
    except every ``interval``-th step, and the ``single_cached`` single-stream blocks replay
    theirs except on ``single_refresh_steps``; the other blocks always run. Defaults: the
    published HunyuanVideo profile (for 50 steps)."""
    return enable_cache(sampler, DeltaCachePolicy(warmup_steps, interval,
                                                  cached={"double": double_cached, "single": single_cached},
                                                  stack_refresh_steps={"single": single_refresh_steps}))


def calibrate_sampler(sampler) -> HunyuanCache:
    """Record, during normal (uncached) generation, what the calibrated peers need: MagCache's
    magnitude ratios and TeaCache's polynomial points (``merge_calibration``)."""
    return enable_cache(sampler, MagnitudeRecorder(len(HUNYUAN_BRANCHES)))


def diagnose_sampler(sampler, gamma: float = 0.5) -> HunyuanCache:
    """The diagnosis run: generation stays uncached while, per CFG branch, every way of estimating
    a skipped DiT call (reusing Δ = v − x or v, or their damped extrapolations with ``gamma``)
    is measured against the call it would have replaced, at gaps of 1, 2 and 3 steps. After
    a video, ``diagnosis_of(cache)`` gives the errors (JSON-able) and ``diagnosis_table`` prints them."""
    return enable_cache(sampler, EstimatorRecorder(gamma))
