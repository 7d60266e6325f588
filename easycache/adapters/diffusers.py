"""huggingface diffusers (>= 0.41): the cache as a stateful ``ModelHook`` on a pipeline's transformer(s),
registered with diffusers' own ``HookRegistry`` -- no class patched, nothing of diffusers copied.

Pipelines mark each transformer call with ``transformer.cache_context(name, ...)``: the name is
the CFG branch ("cond", "uncond"), and ``WanPipeline`` also gives the step index and the step
count. The first branch of a step decides, the others follow; a call with step 0 on the first
branch (or, without a step index, a timestep that rises) starts a new video, so state never
leaks from a call that raised. Wan 2.2's two transformers (``transformer`` for the high-noise
steps, ``transformer_2`` after ``boundary_ratio``) get a cache each, on one step clock. The
transformation vector is taken on ``hidden_states[:, :out_channels]`` (image-to-video feeds 36
channels, the prediction has 16). A pipeline that passes no cache context at all (FramePack,
video-to-video, HunyuanVideo image-to-video) runs uncached, with one warning.
"""

import inspect
import sys
import warnings
from dataclasses import dataclass, field
from typing import Dict, Optional, Union

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from easycache.policies.base import Policy, make_policies
from easycache.policies.calibration import MagnitudeRecorder
from easycache.policies.diagnosis import EstimatorRecorder
from easycache.runtime.blocks import BlockLayout
from easycache.runtime.model import CachedForward, ModelIO
from easycache.runtime.pipeline import wrap_model
from easycache.runtime.session import NoCallSeen, Session

HOOK_NAME = "easycache"
NO_CONTEXT = ("this pipeline calls its transformer without a cache_context (FramePack, video-to-video and "
              "HunyuanVideo image-to-video do): EasyCache cannot tell its steps apart and runs uncached")
NOT_SEEN = ("no transformer call reached it: the transformer's forward was replaced after the cache was enabled; "
            "enable the cache after the pipeline is fully built")


@dataclass
class EasyCacheConfig:
    """For ``apply_easycache`` on a transformer in your own loop: EasyCache's tau and warm-up, or
    any registered ``policy`` by name (its settings in ``policy_settings``) or as a Policy; and
    the video's step count where the loop's cache contexts do not give it."""

    threshold: float = 0.05
    warmup_steps: int = 10
    policy: Union[str, Policy] = "easycache"
    policy_settings: dict = field(default_factory=dict)
    num_inference_steps: Optional[int] = None

    def make(self) -> Policy:
        if self.policy == "easycache" and not self.policy_settings:
            return make_policies("easycache", [None], threshold=self.threshold, warmup_steps=self.warmup_steps)[None]
        return make_policies(self.policy, [None], **self.policy_settings)[None]


class DiffusersIO(ModelIO):
    """A diffusers transformer's call: ``hidden_states`` in (its first ``out_channels`` channels:
    the latent), a tuple or ``Transformer2DModelOutput`` out, in the dtype it would have."""

    def __init__(self, transformer):
        super().__init__(self._inputs_of, self._outputs_of, self._make_output,
                         lambda args, kwargs: self.arguments(args, kwargs).get("timestep"))
        self.transformer = transformer
        self.signature = inspect.signature(type(transformer).forward)  # the class's: the instance's may be wrapped
        self.out_channels = transformer.config.out_channels
        self.output_dtype = None

    def arguments(self, args, kwargs) -> dict:
        bound = self.signature.bind(self.transformer, *args, **kwargs)
        bound.apply_defaults()
        return bound.arguments

    def _inputs_of(self, args, kwargs):
        return [self.arguments(args, kwargs)["hidden_states"][:, :self.out_channels]]

    def _outputs_of(self, result):
        sample = result[0] if isinstance(result, tuple) else result.sample
        self.output_dtype = sample.dtype
        return [sample]

    def _make_output(self, tensors, args, kwargs):
        sample = tensors[0].to(self.output_dtype) if self.output_dtype is not None else tensors[0]
        return Transformer2DModelOutput(sample=sample) if self.arguments(args, kwargs)["return_dict"] else (sample,)


def block_layout(transformer) -> BlockLayout:
    """The block loops of the transformers block-level policies know: Wan's (one list; TeaCache's
    indicator the time embedding ``temb``, or ``timestep_proj`` with ret steps) and HunyuanVideo's
    (two lists, each block carrying hidden and text states; the first block's modulated input)."""
    kind = type(transformer).__name__
    if kind == "WanTransformer3DModel":
        def time_embedding(hooks):
            captured = {}
            hooks.append(transformer.condition_embedder.register_forward_hook(
                lambda module, inputs, output: captured.__setitem__("temb", output[0])))
            return lambda block_args, block_kwargs: [captured["temb"]]
        return BlockLayout(lists=[transformer.blocks], names=["blocks"], indicators={
            "modulated": time_embedding,
            "modulated-projected": lambda hooks: lambda block_args, block_kwargs: [block_args[2]]})
    if kind == "HunyuanVideoTransformer3DModel":
        first = transformer.transformer_blocks[0]
        return BlockLayout(lists=[transformer.transformer_blocks, transformer.single_transformer_blocks],
                           names=["double", "single"], carried=[2, 2], sharded_indicator=True, indicators={
                               "modulated": lambda hooks: lambda block_args, block_kwargs: [
                                   first.norm1(block_args[0], emb=block_args[2])[0]]})
    raise ValueError(f"block-level caching does not know {kind}'s block loop (it knows WanTransformer3DModel and "
                     "HunyuanVideoTransformer3DModel); use a whole-model policy such as easycache")


class _NoState(BaseState):
    def reset(self, *args, **kwargs) -> None:
        pass


class EasyCacheHook(ModelHook):
    """The hook on one transformer: hands each call, with the cache context the pipeline set, to
    the pipeline's DiffusersCache."""

    _is_stateful = True

    def __init__(self, cache: "DiffusersCache", name: Optional[str]):
        super().__init__()
        self.cache, self.name = cache, name
        self.contexts = StateManager(_NoState)  # diffusers sets each call's cache context on it

    def new_forward(self, module, *args, **kwargs):
        return self.cache.on_call(self.name, self.contexts._context, args, kwargs)

    def reset_state(self, module):
        self.cache.end_video(self.name)  # the pipeline's end; a new video is also detected at its first call
        return module


class DiffusersCache:
    """The cache on a diffusers pipeline's transformer(s): one session (the step clock), one
    wrapper and hook per transformer. ``report()``, ``disable()``, ``policies`` as the other
    adapters' caches have them."""

    def __init__(self, transformers: Dict[Optional[str], torch.nn.Module], policies, pipe=None,
                 num_inference_steps: Optional[int] = None):
        for transformer in transformers.values():
            if getattr(transformer, "is_cache_enabled", False):
                raise RuntimeError(f"another cache ({type(transformer._cache_config).__name__}) is enabled on this "
                                   "transformer; call transformer.disable_cache() first")
            if HOOK_NAME in HookRegistry.check_if_exists_or_initialize(transformer).hooks:
                raise RuntimeError("EasyCache is already enabled on this transformer; call remove_easycache() or "
                                   ".disable() first")
        self.pipe, self.transformers, self.num_inference_steps = pipe, dict(transformers), num_inference_steps
        self.session = Session(("cond", "uncond"))
        self.policies = dict(policies)
        for name, transformer in self.transformers.items():
            policy = self.policies[name]
            if policy is not None and policy.level == "blocks" and getattr(transformer, "_parallel_config", None):
                raise ValueError(f"{policy.name} caches inside the block loop, which diffusers' context parallelism "
                                 "splits inside its first block; under context parallelism use a whole-model policy "
                                 "(easycache, uniform)")
        self.hooks, self.wrappers = {}, {}
        for name, transformer in self.transformers.items():
            hook = EasyCacheHook(self, name)
            HookRegistry.check_if_exists_or_initialize(transformer).register_hook(hook, HOOK_NAME)
            self.hooks[name] = hook
            self.wrappers[name] = wrap_model(transformer, self.policies[name], self.session, DiffusersIO(transformer),
                                             lambda transformer=transformer: block_layout(transformer), name,
                                             inner_forward=lambda *a, hook=hook, **k: hook.fn_ref.original_forward(*a, **k))
        self.running, self._warned = False, False
        self._reset_since_call = set(self.transformers)  # nothing to report before the first call
        self._counts, self._last_timestep, self._uncached_calls = {}, None, 0

    # --- the step clock ------------------------------------------------------------------------

    def on_call(self, name, context, args, kwargs):
        wrapper = self.wrappers[name]
        self._reset_since_call = set()
        if context is None:
            if not self._warned:
                warnings.warn(f"EasyCache: {NO_CONTEXT}", stacklevel=3)
                self._warned = True
            self._uncached_calls += 1
            return wrapper.inner_forward(*args, **kwargs)
        if context.name not in self.session.branches:
            self.session.branches += (context.name,)
        branch = self.session.branches.index(context.name)
        timestep = float(wrapper.io.arguments(args, kwargs)["timestep"].flatten()[0])
        if context.step_index is not None:
            new_video = context.step_index == 0 and branch == 0
        else:  # without a step index: a new trajectory starts where the timestep rises
            new_video = branch == 0 and (self._last_timestep is None or timestep > self._last_timestep)
        if new_video or not self.running:
            self.start_video(context.num_inference_steps)
        step = context.step_index if context.step_index is not None else self._counts.get(branch, 0)
        self._counts[branch] = step + 1
        self._last_timestep = timestep if branch == 0 else self._last_timestep
        return wrapper.call(step, branch, args, kwargs)

    def start_video(self, num_steps: Optional[int]) -> None:
        if self.running:  # the last video did not end through the pipeline (it raised, or a custom loop)
            self._finish()
        num_steps = num_steps or self.num_inference_steps or self._scheduler_steps()
        if not num_steps:
            raise RuntimeError("EasyCache cannot tell how many steps this video has: the pipeline's cache contexts "
                               "do not say; pass num_inference_steps in EasyCacheConfig")
        self.session.start(num_steps)
        for name, (first, count) in self._ranges(num_steps).items():
            self.wrappers[name].start_video(first, count)
        self.running, self._counts, self._last_timestep = True, {}, None

    def _scheduler_steps(self) -> Optional[int]:
        timesteps = getattr(getattr(self.pipe, "scheduler", None), "timesteps", None)
        return len(timesteps) if timesteps is not None else None

    def _ranges(self, num_steps: int):
        """Each transformer's steps: Wan 2.2's high-noise one while t >= boundary, then the other."""
        if set(self.transformers) != {"high", "low"}:
            return {name: (0, num_steps) for name in self.transformers}
        boundary = self.pipe.config.boundary_ratio * self.pipe.scheduler.config.num_train_timesteps
        high = sum(float(t) >= boundary for t in self.pipe.scheduler.timesteps[:num_steps])
        return {"high": (0, high), "low": (high, num_steps - high)}

    def end_video(self, name: Optional[str]) -> None:
        """The pipeline's call ended: it resets every hook, once per transformer. The first reset
        after a call closes the video; a pipeline call in which no call was cached leaves its
        reason in the report's warnings (a transformer reset twice with no call between: a whole
        pipeline call went by unseen)."""
        unseen = name in self._reset_since_call
        first = not self._reset_since_call
        self._reset_since_call.add(name)
        if self.running and first:
            self._finish()
        elif unseen or (first and not self.running):
            self.session.start(0)
            self._end_session(NO_CONTEXT if self._uncached_calls else NOT_SEEN)
        self._uncached_calls = 0

    def _finish(self) -> None:
        self.running = False
        self._end_session(NOT_SEEN)

    def _end_session(self, no_call_hint: str) -> None:
        self.session.end(no_call_hint)
        for warning in self.session.warnings:
            print(f"easycache: warning: {warning}", file=sys.stderr)

    # --- the handle ---------------------------------------------------------------------------

    def report(self, allow_warnings: bool = False) -> dict:
        """The last video's report (as the other adapters give it)."""
        report = {"cache": _method(self.policies)}
        settings = {name: policy.settings for name, policy in self.policies.items() if policy is not None}
        if list(settings) == [None]:
            report.update(settings[None])
        elif settings:
            report["settings"] = settings
        report.update(self.session.report())
        if report["warnings"] and not allow_warnings:
            raise NoCallSeen("; ".join(report["warnings"]))
        return report

    def disable(self) -> None:
        """Remove the hooks and restore the block loops."""
        for name, transformer in self.transformers.items():
            _remove(transformer, self.wrappers[name])


def _remove(transformer, wrapper) -> None:
    wrapper.disable()
    HookRegistry.check_if_exists_or_initialize(transformer).remove_hook(HOOK_NAME, recurse=False)
    # the registry leaves the class's forward bound on the instance where there was none before
    forward = transformer.__dict__.get("forward")
    if getattr(forward, "__func__", None) is type(transformer).forward and getattr(forward, "__self__", None) is transformer:
        del transformer.forward


def _method(policies) -> str:
    names = {p.name for p in policies.values() if p is not None}
    return names.pop() if len(names) == 1 else ("none" if not names else "mixed")


def _transformers(pipe) -> Dict[Optional[str], torch.nn.Module]:
    if getattr(pipe, "transformer_2", None) is not None:
        if getattr(pipe.config, "boundary_ratio", None) is None:
            raise ValueError("the pipeline has transformer_2 but no boundary_ratio: which steps it serves is unknown")
        return {"high": pipe.transformer, "low": pipe.transformer_2}
    return {None: pipe.transformer}


def pipeline_defaults(pipe) -> dict:
    """EasyCache's official settings for the pipeline's model: HunyuanVideo tau 0.025, R 5; Wan 2.2
    T2V-A14B 0.06, I2V-A14B and TI2V-5B 0.05, R 7 (the low-noise expert's own: 2); Wan 2.1 0.05,
    R 10."""
    if type(pipe.transformer).__name__.startswith("HunyuanVideo"):
        return {"threshold": 0.025, "warmup_steps": 5}
    if getattr(pipe, "transformer_2", None) is not None:
        image = "ImageToVideo" in type(pipe).__name__
        return {"threshold": 0.05 if image else 0.06, "warmup_steps": 7, "per_part": {"low": {"warmup_steps": 2}}}
    if getattr(pipe.config, "expand_timesteps", False):
        return {"threshold": 0.05, "warmup_steps": 7}
    return {"threshold": 0.05, "warmup_steps": 10}


def enable_cache(pipe, policy=None, **settings) -> DiffusersCache:
    """Enable a cache on a built diffusers pipeline (WanPipeline for Wan 2.1, Wan 2.2 with two
    transformers and TI2V, WanImageToVideoPipeline, HunyuanVideoPipeline, and any other whose
    transformer is called in cache contexts). ``policy``: a registered name with its settings as
    keywords (``per_part={"low": {...}}`` for Wan 2.2's low-noise transformer), a Policy (copied
    per transformer), ``{"high": ..., "low": ...}``, or None (the baseline, counted and timed).
    Under context parallelism, enable it after ``transformer.enable_parallelism(...)``."""
    transformers = _transformers(pipe)
    return DiffusersCache(transformers, make_policies(policy, list(transformers), **settings), pipe=pipe)


def enable_easycache(pipe, threshold: Optional[float] = None, warmup_steps: Optional[int] = None,
                     **settings) -> DiffusersCache:
    """EasyCache on a built diffusers pipeline in one line, with the official settings for its
    model unless given (see ``pipeline_defaults``); ``per_part={"low": {"threshold": ...}}``
    tunes Wan 2.2's low-noise transformer on its own."""
    chosen = pipeline_defaults(pipe)
    chosen.update((k, v) for k, v in (("threshold", threshold), ("warmup_steps", warmup_steps)) if v is not None)
    chosen.update(settings)
    return enable_cache(pipe, "easycache", **chosen)


def calibrate_pipeline(pipe, use_ret_steps: bool = False) -> DiffusersCache:
    """Record, while the pipeline runs uncached, what the calibrated peers need (per transformer)."""
    return enable_cache(pipe, MagnitudeRecorder(2, use_ret_steps))


def diagnose_pipeline(pipe, gamma: float = 0.5) -> DiffusersCache:
    """The diagnosis run: generation stays uncached while, per CFG branch, every way of estimating
    a skipped DiT call (reusing Δ = v − x or v, or their damped extrapolations with ``gamma``)
    is measured against the call it would have replaced, at gaps of 1, 2 and 3 steps, per
    transformer. After a video, ``diagnosis_of(cache)`` gives the errors (JSON-able) and
    ``diagnosis_table`` prints them."""
    return enable_cache(pipe, EstimatorRecorder(gamma))


def apply_easycache(transformer, config: Optional[EasyCacheConfig] = None) -> DiffusersCache:
    """EasyCache (or ``config.policy``) on one transformer called in your own loop, inside
    ``transformer.cache_context("cond", step_index=i, num_inference_steps=n)``; the handle's
    ``report()`` gives the last video's record."""
    config = config or EasyCacheConfig()
    return DiffusersCache({None: transformer}, {None: config.make()}, num_inference_steps=config.num_inference_steps)


def remove_easycache(transformer) -> None:
    """Undo ``apply_easycache`` (or ``enable_easycache``) on this transformer."""
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    hook = registry.get_hook(HOOK_NAME)
    if hook is None:
        raise RuntimeError("EasyCache is not applied to this transformer")
    _remove(transformer, hook.cache.wrappers[hook.name])
