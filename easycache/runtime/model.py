"""Whole-model caching: the DiT's forward, replaced on the instance, runs or is replaced by the
policy's estimate. Wrapping the instance (not the class) catches whatever forward it has when
the cache is enabled: the class's, a sequence-parallel one the pipeline bound, an FSDP wrapper's.
"""

import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch

from easycache.policies.base import Decision, Policy
from easycache.runtime.distributed import agree_across_ranks, max_across_ranks
from easycache.runtime.session import Session


@dataclass
class ModelIO:
    """How a host's DiT call carries its tensors: ``inputs_of(args, kwargs)`` the latent(s) x,
    ``outputs_of(result)`` the prediction(s) v, ``make_output(tensors, args, kwargs)`` a result
    in the caller's contract from estimated v, ``timestep_of(args, kwargs)`` the timestep tensor
    the call passes (None: the host passes none)."""

    inputs_of: Callable[[tuple, dict], List[torch.Tensor]]
    outputs_of: Callable[[object], List[torch.Tensor]]
    make_output: Callable[[List[torch.Tensor], tuple, dict], object]
    timestep_of: Optional[Callable[[tuple, dict], Optional[torch.Tensor]]] = None

    def timestep(self, args: tuple, kwargs: dict) -> Optional[float]:
        """The call's timestep as one number: its largest entry (a per-token timestep is 0 on
        clean conditioning tokens, the noise level elsewhere)."""
        t = self.timestep_of(args, kwargs) if self.timestep_of is not None else None
        return None if t is None else float(torch.as_tensor(t).float().max())


def _synchronize(tensors: Sequence[torch.Tensor]) -> None:
    if tensors and tensors[0].is_cuda:
        torch.cuda.synchronize(tensors[0].device)


class CachedForward:
    """Replaces ``module.forward`` on the instance with a cached one driven by ``policy``
    (None: every call runs; still counted and timed, for a baseline). The module serves the
    steps ``[first_step, first_step + num_steps)`` of each video (all of them, unless several
    modules share it: Wan2.2's experts); its policy counts steps from ``first_step``. A call
    outside those steps means the host switched modules elsewhere than predicted: an error."""

    def __init__(self, module: torch.nn.Module, policy: Optional[Policy], session: Session, io: ModelIO,
                 name: Optional[str] = None, inner_forward: Optional[Callable] = None):
        """``inner_forward``: given, the caller (a diffusers hook) routes calls to ``call`` and
        runs the model through it, and the module's forward is left alone."""
        if getattr(module, "_easycache", None) is not None:
            raise RuntimeError("a cache is already enabled on this model; call disable() first")
        self.module, self.policy, self.session, self.io, self.name = module, policy, session, io, name
        self.installed = inner_forward is None
        self._had_instance_forward = "forward" in module.__dict__
        self.inner_forward = module.forward if self.installed else inner_forward
        if self.installed:
            module.forward = self._forward
        module._easycache = self
        if policy is not None:
            policy.most_cautious = max_across_ranks
        self.start_video(0, 0)

    def disable(self) -> None:
        """Give the module back the forward it had before."""
        if self.installed and self._had_instance_forward:
            self.module.forward = self.inner_forward
        elif self.installed:
            del self.module.forward
        self.module._easycache = None

    def start_video(self, first_step: int, num_steps: int) -> None:
        self.first_step, self.num_steps = first_step, num_steps
        self._step_decision: Optional[Decision] = None
        if self.policy is not None:
            self.policy.start_video(num_steps)

    def _forward(self, *args, **kwargs):
        step, branch = self.session.next_call()
        return self.call(step, branch, args, kwargs)

    def call(self, step: int, branch: int, args: tuple, kwargs: dict):
        """One DiT call at (step, branch) of the video: run it, or reuse."""
        x = self.io.inputs_of(args, kwargs)
        _synchronize(x)
        started = time.perf_counter()
        if self.policy is None:
            result, computed, decision, blocks = self.inner_forward(*args, **kwargs), True, None, None
        else:
            local = step - self.first_step
            if self.session.num_steps and not 0 <= local < self.num_steps:
                raise RuntimeError(f"{self.name or 'the DiT'} was called at step {step}, outside its steps "
                                   f"{self.first_step}..{self.first_step + self.num_steps - 1}")
            if self.policy.uses_timestep:
                self.policy.locate(local, branch, self.io.timestep(args, kwargs))
            result, computed, decision, blocks = self._cached_call(local, branch, x, args, kwargs)
        _synchronize(x)
        row = self._row(step, branch, computed, decision, blocks)
        if (computed or blocks is not None) and not all(bool(torch.isfinite(v).all()) for v in self.io.outputs_of(result)):
            row["nonfinite"] = True  # an invalid video follows: the session says so at once and in the report
        self.session.record(row, time.perf_counter() - started, blocks)
        return result

    def _decide(self, local_step: int, branch: int, indicator, device) -> Decision:
        """Branch 0 decides; the other branches of its step follow, unless the policy decides
        per branch."""
        if branch == 0 or self.policy.per_branch:
            self._step_decision = self.policy.decide(local_step, branch, indicator,
                                                     lambda wants: agree_across_ranks(wants, device))
        return self._step_decision

    def _cached_call(self, local_step, branch, x, args, kwargs):
        """(result, computed, decision, blocks): run the model or return x + delta."""
        decision = self._decide(local_step, branch, x, x[0].device)
        key = (branch, 0)
        if decision.compute:
            result = self.inner_forward(*args, **kwargs)
            self.policy.record_computed(key, x, self.io.outputs_of(result))
            return result, True, decision, None
        return self.io.make_output(self.policy.reuse(key, x), args, kwargs), False, decision, None

    def _row(self, step, branch, computed, decision, blocks) -> dict:
        row = {"step": step, "branch": self.session.branches[branch], "computed": computed}
        if self.name is not None:
            row["module"] = self.name
        if decision is not None:
            row.update(reason=decision.reason, k=decision.k, eps=decision.eps, E=decision.accumulated)
            if decision.groups:
                row["groups"] = dict(decision.groups)
            if decision.estimator and not computed:
                row["estimator"] = decision.estimator
        if blocks is not None:
            row["blocks_run"] = blocks[0]
        return row
