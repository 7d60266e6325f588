"""Wan2.1 (https://github.com/Wan-Video/Wan2.1): every pipeline (WanT2V, WanI2V, WanFLF2V,
WanVace) has one DiT, ``pipe.model``, called as every Wan DiT is (easycache.adapters.wan);
``generate(..., sampling_steps=...)`` makes one video. Published constants for the peer methods
live here.
"""

import inspect
from typing import Sequence

from easycache.policies.base import make_policy
from easycache.policies.calibration import MagnitudeRecorder
from easycache.policies.deltacache import DeltaCachePolicy
from easycache.policies.diagnosis import EstimatorRecorder
from easycache.policies.easycache import EasyCachePolicy
from easycache.policies.magcache import MagCachePolicy
from easycache.policies.teacache import TeaCachePolicy
from easycache.adapters.wan import WAN_BRANCHES, WAN_IO, wan_block_layout
from easycache.runtime.pipeline import PipelineCache, check_not_enabled, wrap_model
from easycache.runtime.session import Session

WAN_PIPELINES = ("WanT2V", "WanI2V", "WanFLF2V", "WanVace")
# Wan2.1's defaults for each policy where they differ from the policy's own
WAN21_DEFAULTS = {"easycache": {"threshold": 0.05, "warmup_steps": 10}, "uniform": {"warmup_steps": 10}}

# TeaCache's published rescaling polynomials (highest power first), keyed by (model, use_ret_steps)
WAN21_TEACACHE_COEFFICIENTS = {
    ("t2v-1.3B", False): [2.39676752e+03, -1.31110545e+03, 2.01331979e+02, -8.29855975e+00, 1.37887774e-01],
    ("t2v-1.3B", True): [-5.21862437e+04, 9.23041404e+03, -5.28275948e+02, 1.36987616e+01, -4.99875664e-02],
    ("t2v-14B", False): [-5784.54975374, 5449.50911966, -1811.16591783, 256.27178429, -13.02252404],
    ("t2v-14B", True): [-3.03318725e+05, 4.90537029e+04, -2.65530556e+03, 5.87365115e+01, -3.15583525e-01],
    ("i2v-14B-480P", False): [-3.02331670e+02, 2.23948934e+02, -5.25463970e+01, 5.87348440e+00, -2.01973289e-01],
    ("i2v-14B-480P", True): [2.57151496e+05, -3.54229917e+04, 1.40286849e+03, -1.35890334e+01, 1.32517977e-01],
    ("i2v-14B-720P", False): [-114.36346466, 65.26524496, -18.82220707, 4.91518089, -0.23412683],
    ("i2v-14B-720P", True): [8.10705460e+03, 2.13393892e+03, -3.72934672e+02, 1.66203073e+01, -4.17769401e-02],
}
# the delta cache's published profile: the blocks of Wan2.1-14B T2V that always run
WAN21_14B_T2V_FOREGROUND = (1, 8, 9, 21, 22, 23, 24, 33, 34, 35, 36, 39)


def wan_teacache_coefficients(task: str, size: str, use_ret_steps: bool):
    """TeaCache's published polynomial for a Wan2.1 task and size, or None if none was published."""
    if task == "i2v-14B":
        model = "i2v-14B-480P" if size in ("832*480", "480*832") else "i2v-14B-720P"
    else:
        model = {"t2v-1.3B": "t2v-1.3B", "t2v-14B": "t2v-14B", "t2i-14B": "t2v-14B"}.get(task)
    return WAN21_TEACACHE_COEFFICIENTS.get((model, use_ret_steps))


def wan_video_steps(arguments: dict):
    steps = int(arguments["sampling_steps"])
    return steps, {None: (0, steps)}


def enable_cache(pipe, policy=None, **settings) -> PipelineCache:
    """Enable a cache on a pipeline built by Wan2.1 (WanT2V, WanI2V, WanFLF2V, WanVace).

    ``policy``: a Policy, the name of a registered one (its settings as keywords; Wan2.1's
    defaults fill the rest), or None for the uncached baseline (calls still counted and
    timed). Call it after the pipeline is built, so it wraps whatever forward ``pipe.model``
    has then: the multi-GPU pipelines bind a sequence-parallel forward on the instance, and
    with ``dit_fsdp`` ``pipe.model`` is the FSDP wrapper. State lives on the returned object
    and is reset by every ``pipe.generate`` call; ``.report()`` gives the last video's
    statistics, ``.disable()`` undoes the wrapping.
    """
    check_not_enabled(pipe)
    if "sampling_steps" not in inspect.signature(pipe.generate).parameters:
        raise TypeError(f"{type(pipe).__name__}.generate takes no sampling_steps; not a Wan2.1 pipeline")
    policy = make_policy(policy, WAN21_DEFAULTS, **settings)
    session = Session(WAN_BRANCHES)
    dit = getattr(pipe.model, "module", pipe.model)  # under FSDP, the wrapped WanModel
    return PipelineCache(pipe, "generate", session,
                         lambda: {None: wrap_model(pipe.model, policy, session, WAN_IO, lambda: wan_block_layout(dit))},
                         wan_video_steps, method=policy.name if policy is not None else "none")


def enable_easycache(pipe, threshold: float = 0.05, warmup_steps: int = 10, enabled: bool = True) -> PipelineCache:
    """Enable EasyCache on a Wan2.1 pipeline (see ``enable_cache``). ``threshold`` is tau
    (relative L1, 0.05 = 5%; 0 computes every step), ``warmup_steps`` the first steps always
    computed (the last step always is). ``enabled=False`` runs every step but still counts and
    times the DiT calls, for a baseline."""
    return enable_cache(pipe, EasyCachePolicy(threshold, warmup_steps) if enabled else None)


def enable_teacache(pipe, threshold: float, coefficients: Sequence[float], use_ret_steps: bool = False):
    """TeaCache (a peer, for comparison): reuse the block stack's residual while the rescaled
    change of the time embedding stays below ``threshold``; ``coefficients``: see
    ``wan_teacache_coefficients``, or a ``--calibrate`` fit."""
    return enable_cache(pipe, TeaCachePolicy(threshold, coefficients, use_ret_steps))


def enable_deltacache(pipe, foreground: Sequence[int] = WAN21_14B_T2V_FOREGROUND, warmup_steps: int = 6,
                      interval: int = 6) -> PipelineCache:
    """The profiling-based delta cache (a peer, for comparison): full steps below
    ``warmup_steps`` and every ``interval``-th step; otherwise only the ``foreground`` blocks
    run and the others replay their stored deltas. Default: the published t2v-14B profile."""
    num_blocks = len(getattr(pipe.model, "module", pipe.model).blocks)
    return enable_cache(pipe, DeltaCachePolicy(warmup_steps, interval, cached=cached_blocks(num_blocks, foreground)))


def cached_blocks(num_blocks: int, foreground: Sequence[int]) -> dict:
    """The delta cache's profile from the blocks that always run (Wan's published form)."""
    outside = [b for b in foreground if not 0 <= b < num_blocks]
    if outside:
        raise ValueError(f"foreground blocks {outside} out of range for a model with {num_blocks} blocks")
    return {"blocks": [b for b in range(num_blocks) if b not in foreground]}


def enable_magcache(pipe, ratios: Sequence[float], threshold: float = 0.12, max_skips: int = 2,
                    retention_ratio: float = 0.2) -> PipelineCache:
    """MagCache (a peer, for comparison) with calibrated residual magnitude ratios (one per
    call; ``calibrate_pipeline`` records them). Defaults are MagCache's: 0.12, K = 2, 20%."""
    return enable_cache(pipe, MagCachePolicy(ratios, threshold, max_skips, retention_ratio, len(WAN_BRANCHES)))


def calibrate_pipeline(pipe, use_ret_steps: bool = False) -> PipelineCache:
    """Record, during normal (uncached) generation, what the calibrated peers need: MagCache's
    magnitude ratios and TeaCache's polynomial points (``merge_calibration``)."""
    return enable_cache(pipe, MagnitudeRecorder(len(WAN_BRANCHES), use_ret_steps))


def diagnose_pipeline(pipe, gamma: float = 0.5) -> PipelineCache:
    """The diagnosis run: generation stays uncached while, per CFG branch, every way of estimating
    a skipped DiT call (reusing Δ = v − x or v, or their damped extrapolations with ``gamma``)
    is measured against the call it would have replaced, at gaps of 1, 2 and 3 steps. After
    a video, ``diagnosis_of(cache)`` gives the errors (JSON-able) and ``diagnosis_table`` prints them."""
    return enable_cache(pipe, EstimatorRecorder(gamma))
