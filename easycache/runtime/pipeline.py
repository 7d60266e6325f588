"""A cache on one pipeline: its DiT module(s), wrapped on the instance and sharing one session,
and the pipeline's per-video method (Wan: ``generate``, HunyuanVideo: ``predict``), wrapped on
the instance to start each video, time it and check that the cache saw it."""

import contextlib
import inspect
import sys
import time
from typing import Callable, Dict, Optional

from easycache.policies.base import Policy
from easycache.runtime.blocks import BlockLayout, CachedBlockStack
from easycache.runtime.model import CachedForward, ModelIO
from easycache.runtime.session import NoCallSeen, Session

NOT_ENGAGED = ("the model's forward was replaced after the cache was enabled (e.g. a sequence-parallel forward "
               "bound later); enable the cache after the pipeline is fully built")


def wrap_model(module, policy: Optional[Policy], session: Session, io: ModelIO, layout: Callable[[], BlockLayout],
               name: Optional[str] = None, inner_forward: Optional[Callable] = None) -> CachedForward:
    """The wrapper the policy's level asks for; ``layout()`` is only asked for block-level ones.
    ``inner_forward``: see CachedForward."""
    if policy is not None and policy.level == "blocks":
        return CachedBlockStack(module, policy, session, io, layout(), name, inner_forward)
    return CachedForward(module, policy, session, io, name, inner_forward)


def check_not_enabled(pipe) -> None:
    if getattr(pipe, "_easycache", None) is not None:
        raise RuntimeError("a cache is already enabled on this pipeline; call disable() first")


class PipelineCache:
    """``make_wrappers()``: wraps the DiT module(s), returning the wrappers by name (None for a
    pipeline with one). ``steps_of(arguments)``: from the per-video method's bound arguments,
    the video's step count and each wrapper's steps as {name: (first_step, num_steps)}.
    ``method``: the cache's name in the report."""

    def __init__(self, pipe, entry: str, session: Session,
                 make_wrappers: Callable[[], Dict[Optional[str], CachedForward]],
                 steps_of: Callable[[dict], tuple], method: str):
        check_not_enabled(pipe)
        self.pipe, self.entry, self.session = pipe, entry, session
        self.wrappers = dict(make_wrappers())
        self.steps_of, self.method = steps_of, method
        self.entry_seconds = 0.0
        self._had_instance_entry = entry in pipe.__dict__
        self.inner_entry = getattr(pipe, entry)
        setattr(pipe, entry, self._run_video)
        pipe._easycache = self

    def _run_video(self, *args, **kwargs):
        bound = inspect.signature(self.inner_entry).bind(*args, **kwargs)
        bound.apply_defaults()
        num_steps, ranges = self.steps_of(bound.arguments)
        self.session.start(num_steps)
        for name, wrapper in self.wrappers.items():
            wrapper.start_video(*ranges[name])
        started = time.perf_counter()
        try:
            result = self.inner_entry(*args, **kwargs)
        except BaseException:
            self.entry_seconds = time.perf_counter() - started
            self.session.end(NOT_ENGAGED, collective=False)  # the other ranks may not get here
            raise
        self.entry_seconds = time.perf_counter() - started
        with self.collective_device():
            self.session.end(NOT_ENGAGED)
        for warning in self.session.warnings:
            print(f"easycache: warning: {warning}", file=sys.stderr)
        return result

    def collective_device(self):
        """The context collectives run in (HunyuanVideo: the rank's CUDA device)."""
        return contextlib.nullcontext()

    @property
    def policies(self) -> Dict[Optional[str], Optional[Policy]]:
        return {name: wrapper.policy for name, wrapper in self.wrappers.items()}

    def report(self, allow_warnings: bool = False) -> dict:
        """The last video's report. Raises NoCallSeen when the cache saw no DiT call, unless ``allow_warnings`` (the report
        then lists the problem under "warnings")."""
        report = {"cache": self.method}
        settings = {name: policy.settings for name, policy in self.policies.items() if policy is not None}
        if list(settings) == [None]:
            report.update(settings[None])
        elif settings:
            report["settings"] = settings
        with self.collective_device():
            report.update(self.session.report(), **{f"{self.entry}_seconds": self.entry_seconds})
        if report["warnings"] and not allow_warnings:
            raise NoCallSeen("; ".join(report["warnings"]))
        return report

    def disable(self) -> None:
        """Restore the pipeline's own method, forward(s) and block loops."""
        for wrapper in self.wrappers.values():
            wrapper.disable()
        if self._had_instance_entry:
            setattr(self.pipe, self.entry, self.inner_entry)
        else:
            delattr(self.pipe, self.entry)
        self.pipe._easycache = None
