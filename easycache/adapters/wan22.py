"""Wan2.2 (https://github.com/Wan-Video/Wan2.2). The A14B pipelines (WanT2V, WanI2V) serve one video
with two separate DiT instances: ``high_noise_model`` for the steps whose timestep is at or above
``boundary * num_train_timesteps``, then ``low_noise_model`` (one switch), chosen per step by
``_prepare_model_for_timestep``. Each expert gets its own policy, state and report rows; the
session's step clock is shared, and each expert's policy counts steps from its first one, so
its warm-up and its last step are its own and nothing crosses the switch. TI2V-5B (WanTI2V) has
one DiT, ``pipe.model``, fed a per-token timestep. Calls, branches and block loops are every
Wan DiT's (easycache.adapters.wan).
"""

import inspect
from typing import Dict, Optional, Union

from easycache.adapters.wan import WAN_BRANCHES, WAN_IO, wan_block_layout
from easycache.policies.base import Policy, make_policies
from easycache.policies.calibration import MagnitudeRecorder
from easycache.policies.diagnosis import EstimatorRecorder
from easycache.policies.easycache import EasyCachePolicy
from easycache.runtime.pipeline import PipelineCache, check_not_enabled, wrap_model
from easycache.runtime.session import Session

WAN22_EXPERTS = {"high": "high_noise_model", "low": "low_noise_model"}
WAN22_PIPELINES = ("WanT2V", "WanI2V", "WanTI2V")
# the official EasyCache settings for Wan2.2 (tau per task, R = 7 warm-up steps); the low-noise
# expert's own warm-up: two computed steps give it a transformation rate of its own
WAN22_THRESHOLDS = {"t2v-A14B": 0.06, "i2v-A14B": 0.05, "ti2v-5B": 0.05}
WAN22_TASKS = {"WanT2V": "t2v-A14B", "WanI2V": "i2v-A14B", "WanTI2V": "ti2v-5B"}
WAN22_WARMUP, WAN22_LOW_WARMUP = 7, 2
WAN22_DEFAULTS = {"easycache": {"warmup_steps": WAN22_WARMUP}, "uniform": {"warmup_steps": WAN22_WARMUP}}


def is_two_expert(pipe) -> bool:
    return all(hasattr(pipe, attribute) for attribute in WAN22_EXPERTS.values())


def solvers_of(pipeline_class) -> dict:
    """The namespace a pipeline's generate() finds its schedulers in (its module's globals)."""
    return pipeline_class.generate.__globals__


def sampling_timesteps(solvers: dict, num_train_timesteps: int, sampling_steps: int, shift: float,
                       sample_solver: str):
    """The timesteps a Wan2.2 pipeline samples at, from its own schedulers (``solvers_of``), built
    on the CPU as the pipeline builds them."""
    if sample_solver == "unipc":
        scheduler = solvers["FlowUniPCMultistepScheduler"](num_train_timesteps=num_train_timesteps, shift=1,
                                                           use_dynamic_shifting=False)
        scheduler.set_timesteps(sampling_steps, device="cpu", shift=shift)
        return scheduler.timesteps
    if sample_solver == "dpm++":
        scheduler = solvers["FlowDPMSolverMultistepScheduler"](num_train_timesteps=num_train_timesteps, shift=1,
                                                               use_dynamic_shifting=False)
        timesteps, _ = solvers["retrieve_timesteps"](scheduler, device="cpu",
                                                     sigmas=solvers["get_sampling_sigmas"](sampling_steps, shift))
        return timesteps
    raise ValueError(f"unsupported sample_solver {sample_solver!r}")


def expert_steps(solvers: dict, boundary: float, num_train_timesteps: int, sampling_steps: int, shift: float,
                 sample_solver: str) -> Dict[str, int]:
    """How many steps each expert serves: the high-noise one while t >= boundary, then the other."""
    timesteps = sampling_timesteps(solvers, num_train_timesteps, sampling_steps, shift, sample_solver)
    high = sum(float(t) >= boundary * num_train_timesteps for t in timesteps)
    return {"high": high, "low": len(timesteps) - high}


def _experts_steps_of(pipe):
    solvers = solvers_of(type(pipe))

    def steps_of(arguments):
        split = expert_steps(solvers, pipe.boundary, pipe.num_train_timesteps, int(arguments["sampling_steps"]),
                             float(arguments["shift"]), arguments["sample_solver"])
        return split["high"] + split["low"], {"high": (0, split["high"]), "low": (split["high"], split["low"])}
    return steps_of


def _single_steps_of(arguments):
    steps = int(arguments["sampling_steps"])
    return steps, {None: (0, steps)}


def enable_cache(pipe, policy: Union[None, str, Policy, dict] = None, **settings) -> PipelineCache:
    """Enable a cache on a pipeline built by Wan2.2 (WanT2V, WanI2V: two experts; WanTI2V).

    ``policy``: a Policy (each expert gets its own copy), a dict ``{"high": Policy, "low":
    Policy}``, the name of a registered one (its settings as keywords, Wan2.2's defaults filling
    the rest; ``per_expert={"low": {...}}`` overrides for one expert), or None for the uncached
    baseline (calls counted and timed per expert). Call it after the pipeline is built, so it
    wraps whatever forward each expert has then (sequence-parallel forwards bound on the
    instances, FSDP wrappers). State lives on the returned object and is reset by every
    ``pipe.generate``; each expert's policy serves only its own steps.
    """
    check_not_enabled(pipe)
    if "sampling_steps" not in inspect.signature(pipe.generate).parameters:
        raise TypeError(f"{type(pipe).__name__}.generate takes no sampling_steps; not a Wan2.2 pipeline")
    session = Session(WAN_BRANCHES)
    if is_two_expert(pipe):
        modules = {name: getattr(pipe, attribute) for name, attribute in WAN22_EXPERTS.items()}
        steps_of = _experts_steps_of(pipe)
    else:
        modules, steps_of = {None: pipe.model}, _single_steps_of
    policies = make_policies(policy, list(modules), WAN22_DEFAULTS, **settings)
    names = {p.name for p in policies.values() if p is not None}
    method = names.pop() if len(names) == 1 else ("none" if not names else "mixed")

    def wrappers():
        return {name: wrap_model(module, policies[name], session, WAN_IO,
                                 lambda module=module: wan_block_layout(getattr(module, "module", module)), name)
                for name, module in modules.items()}
    return PipelineCache(pipe, "generate", session, wrappers, steps_of, method=method)


def default_threshold(pipe) -> float:
    return WAN22_THRESHOLDS[WAN22_TASKS.get(type(pipe).__name__, "ti2v-5B")]


def enable_easycache(pipe, threshold: Optional[float] = None, warmup_steps: int = WAN22_WARMUP,
                     threshold_high: Optional[float] = None, threshold_low: Optional[float] = None,
                     warmup_steps_low: int = WAN22_LOW_WARMUP, enabled: bool = True) -> PipelineCache:
    """EasyCache on a Wan2.2 pipeline (see ``enable_cache``). ``threshold``: tau (default: the
    official one for the pipeline's task, 0.06 for T2V-A14B, 0.05 otherwise); ``warmup_steps``:
    the first steps always computed (A14B: the high-noise expert's). A14B only: per-expert
    ``threshold_high``/``threshold_low`` (default: ``threshold``) and ``warmup_steps_low`` for the
    low-noise expert, whose first step is always computed. The last step of each expert is.
    ``enabled=False`` counts and times the baseline."""
    if not enabled:
        return enable_cache(pipe, None)
    tau = default_threshold(pipe) if threshold is None else threshold
    if not is_two_expert(pipe):
        return enable_cache(pipe, EasyCachePolicy(tau, warmup_steps))
    return enable_cache(pipe, {
        "high": EasyCachePolicy(tau if threshold_high is None else threshold_high, warmup_steps),
        "low": EasyCachePolicy(tau if threshold_low is None else threshold_low, warmup_steps_low)})


def calibrate_pipeline(pipe, use_ret_steps: bool = False) -> PipelineCache:
    """Record, during normal (uncached) generation, what the calibrated peers need, per expert:
    MagCache's magnitude ratios and TeaCache's polynomial points (``merge_calibration``)."""
    return enable_cache(pipe, MagnitudeRecorder(len(WAN_BRANCHES), use_ret_steps))


def diagnose_pipeline(pipe, gamma: float = 0.5) -> PipelineCache:
    """The diagnosis run: generation stays uncached while, per CFG branch, every way of estimating
    a skipped DiT call (reusing Δ = v − x or v, or their damped extrapolations with ``gamma``)
    is measured against the call it would have replaced, at gaps of 1, 2 and 3 steps, per expert
    (nothing measured across the switch). After a video, ``diagnosis_of(cache)`` gives the errors
    (JSON-able) and ``diagnosis_table`` prints them."""
    return enable_cache(pipe, EstimatorRecorder(gamma))
