"""EasyCache policy: per denoising step, run the DiT or reuse its transformation vector.

Pure tensor math, no model knowledge. Semantics follow the official EasyCache
(arXiv 2507.02860), with its defects fixed:

* transformation vector  delta = v - x  (whole-model output minus raw input), per branch;
* transformation rate    k = mean|v_i - v_j| / mean|x_i - x_j|  over the two most
  recent *computed* steps i, j (re-estimated at every computed step);
* step indicator         eps_t = k * mean|x_t - x_{t-1}| / mean|v_i|  (input change between
  consecutive steps, normalised by the last computed output);
* E += eps_t; reuse while E < threshold, else compute and set E = 0;
* the first ``warmup_steps`` steps and the last step are always computed.

Fixes: a zero or non-finite denominator, or a non-finite statistic, forces a full
compute instead of dividing by zero; all state lives on the instance and
``start_video`` clears it, so videos in one process do not leak into each other.
"""

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch

Tensors = Sequence[torch.Tensor]


def mean_abs(tensors: Tensors) -> torch.Tensor:
    """Mean |.| over every element of a list of tensors, in fp32 (a 0-d tensor)."""
    total = sum(u.float().abs().sum() for u in tensors)
    return total / sum(u.numel() for u in tensors)


def mean_abs_diff(a: Tensors, b: Tensors) -> torch.Tensor:
    """Mean |a - b| over every element of two lists of equally shaped tensors, in fp32."""
    total = sum((u.float() - w.float()).abs().sum() for u, w in zip(a, b))
    return total / sum(u.numel() for u in a)


@dataclass
class StepDecision:
    """What the policy decided for one step, with the statistics behind it."""

    step: int
    compute: bool
    reason: str  # warmup | last | no-statistic | threshold | reuse | peer
    k: Optional[float]
    eps: Optional[float]
    accumulated: float  # E after this step's update
    groups: Optional[dict] = None  # per named segment group, whether its blocks run (fixed schedules)


def _finite_or_none(value: float) -> Optional[float]:
    return value if math.isfinite(value) else None


def accumulate(accumulated: float, eps: Optional[float], forced: Optional[str], threshold: float,
               agree: Optional[Callable[[bool], bool]]):
    """The accumulate-and-reset rule EasyCache and TeaCache share: E + eps below the
    threshold reuses, otherwise (or when forced, or when a peer rank asks) compute and
    reset E. Returns (compute, reason, E after this step)."""
    candidate = accumulated + (eps or 0.0)
    wants_compute = forced is not None or candidate >= threshold
    compute = agree(wants_compute) if agree is not None else wants_compute
    if compute:
        return True, forced or ("threshold" if wants_compute else "peer"), 0.0
    return False, "reuse", candidate


class DeltaStore:
    """Per-key stored deltas (after - before), replayed as before + delta; the block-level
    policies key them by (branch, segment)."""

    def start_deltas(self) -> None:
        self.deltas = {}

    def record_computed(self, key, before: Sequence[torch.Tensor], after: Sequence[torch.Tensor]) -> None:
        self.deltas[key] = [a.detach() - b.detach() for a, b in zip(after, before)]

    def reuse(self, key, before: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        return [b + d.to(b.dtype) for b, d in zip(before, self.deltas[key])]


class EasyCachePolicy:
    """Runtime-adaptive reuse of the transformation vector for one model instance.

    Per step: ``decide(step, x)`` on the decision branch (Wan: the conditional call),
    then for every branch either ``record_computed(branch, x, v)`` after running the
    model, or ``reuse(branch, x)`` to get ``x + delta_branch``.
    """

    def __init__(self, threshold: float = 0.05, warmup_steps: int = 10):
        if not (threshold >= 0 and math.isfinite(threshold)):
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.threshold = float(threshold)
        self.warmup_steps = int(warmup_steps)
        self.start_video(num_steps=0)

    @property
    def settings(self) -> dict:
        return {"threshold": self.threshold, "warmup_steps": self.warmup_steps}

    def start_video(self, num_steps: int) -> None:
        """Forget everything from the previous video."""
        self.num_steps = num_steps
        self.k: Optional[float] = None
        self.accumulated = 0.0
        self.prev_input: Optional[List[torch.Tensor]] = None  # x_{t-1}, every step
        self.computed_input: Optional[List[torch.Tensor]] = None  # x_i, last computed step
        self.computed_output: Optional[List[torch.Tensor]] = None  # v_i
        self.computed_output_norm: Optional[float] = None  # mean|v_i|
        self.deltas = {}  # branch -> list of fp32 (v - x)
        self.decisions: List[StepDecision] = []

    def _indicator(self, x: Tensors) -> Optional[float]:
        """eps_t, or None where it is undefined (no rate yet, zero norm, non-finite)."""
        if self.k is None or self.prev_input is None or not self.computed_output_norm:
            return None
        input_change = mean_abs_diff(x, self.prev_input).item()
        return _finite_or_none(self.k * input_change / self.computed_output_norm)

    def decide(self, step: int, x: Tensors,
               agree: Optional[Callable[[bool], bool]] = None) -> StepDecision:
        """Decide whether step ``step`` (0-based) runs the model.

        ``agree`` maps this process's wish to compute onto the decision every process
        takes (multi-GPU: compute if any rank wants to), so all ranks stay in step.
        """
        forced = None
        if step < self.warmup_steps:
            forced = "warmup"
        elif step >= self.num_steps - 1:
            forced = "last"
        elif 0 not in self.deltas:
            forced = "no-statistic"
        eps = None if forced else self._indicator(x)
        if forced is None and eps is None:
            forced = "no-statistic"

        compute, reason, self.accumulated = accumulate(self.accumulated, eps, forced, self.threshold, agree)
        self.prev_input = [u.detach().float().clone() for u in x]
        decision = StepDecision(step, compute, reason, self.k, eps, self.accumulated)
        self.decisions.append(decision)
        return decision

    def record_computed(self, branch: int, x: Tensors, v: Tensors) -> None:
        """Store the branch's delta; on the decision branch (0) also update k and v_i."""
        x32 = [u.detach().float() for u in x]
        v32 = [u.detach().float() for u in v]
        self.deltas[branch] = [o - i for o, i in zip(v32, x32)]
        if branch != 0:
            return
        if self.computed_input is not None:
            input_change = mean_abs_diff(x32, self.computed_input).item()
            output_change = mean_abs_diff(v32, self.computed_output).item()
            rate = output_change / input_change if input_change > 0 else math.nan
            self.k = _finite_or_none(rate)
        self.computed_input = [u.clone() for u in x32]
        self.computed_output = [u.clone() for u in v32]
        self.computed_output_norm = _finite_or_none(mean_abs(v32).item())

    def reuse(self, branch: int, x: Tensors) -> List[torch.Tensor]:
        """The model output estimated as x + delta of the branch's last computed step."""
        return [u.float() + d for u, d in zip(x, self.deltas[branch])]
