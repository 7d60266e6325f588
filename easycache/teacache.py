"""TeaCache policy (https://github.com/ali-vilab/TeaCache), a peer of EasyCache offered for
comparison. Pure tensor math, the same interface as EasyCachePolicy.

Per step the indicator is the relative L1 change of the timestep-modulated input
(Wan2.1: the time embedding ``e``, or its projection ``e0`` with ``use_ret_steps``),
rescaled by a fitted polynomial and accumulated; the cached residual of the block
stack is reused while the sum stays below the threshold. Forced steps, as published:
first step and last step; with ``use_ret_steps`` the first 5 steps and no forced last.
The official script keeps a separate accumulator per CFG branch; both see the same
timestep, so one decision per step (taken on the conditional call) is the same rule.
"""

import math
from typing import Callable, List, Optional, Sequence

import torch

from easycache.policy import DeltaStore, StepDecision, accumulate

# Published rescaling polynomials for Wan2.1 (highest power first), keyed by
# (model, use_ret_steps).
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


def relative_l1(current: Sequence[torch.Tensor], previous: Sequence[torch.Tensor],
                reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> float:
    """mean|current - previous| / mean|previous| over all elements (nan when undefined).
    ``reduce`` sums the two partial sums over the processes that each hold a shard."""
    diff = sum((c.float() - p.float()).abs().sum() for c, p in zip(current, previous))
    norm = sum(p.float().abs().sum() for p in previous)
    if reduce is not None:
        diff, norm = reduce(torch.stack([diff, norm]))
    diff, norm = diff.item(), norm.item()
    return diff / norm if norm > 0 else math.nan


def polyval(coefficients: Sequence[float], value: float) -> float:
    """numpy.poly1d(coefficients)(value): Horner's rule, highest power first."""
    result = 0.0
    for c in coefficients:
        result = result * value + c
    return result


class TeaCachePolicy(DeltaStore):
    """Accumulated, polynomial-rescaled change of the modulated input decides reuse.

    ``decide(step, indicator)`` on the decision branch; then per branch
    ``record_computed(branch, before, after)`` with the block stack's input and output,
    or ``reuse(branch, before)`` for ``before + residual``.
    """

    def __init__(self, threshold: float, coefficients: Sequence[float], use_ret_steps: bool = False,
                 reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        if not (threshold >= 0 and math.isfinite(threshold)):
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
        if not coefficients:
            raise ValueError("TeaCache needs rescaling coefficients")
        self.threshold = float(threshold)
        self.coefficients = [float(c) for c in coefficients]
        self.use_ret_steps = use_ret_steps
        self.warmup_steps = 5 if use_ret_steps else 1
        self.force_last = not use_ret_steps
        self.reduce = reduce  # the indicator is a per-rank shard: sum its statistics over ranks
        self.start_video(num_steps=0)

    @property
    def settings(self) -> dict:
        return {"threshold": self.threshold, "use_ret_steps": self.use_ret_steps, "coefficients": self.coefficients}

    def start_video(self, num_steps: int) -> None:
        self.num_steps = num_steps
        self.accumulated = 0.0
        self.prev_indicator: Optional[List[torch.Tensor]] = None
        self.start_deltas()
        self.decisions = []

    def decide(self, step: int, indicator: Sequence[torch.Tensor],
               agree: Optional[Callable[[bool], bool]] = None):
        forced = None
        if step < self.warmup_steps:
            forced = "warmup"
        elif self.force_last and step >= self.num_steps - 1:
            forced = "last"
        elif self.prev_indicator is None or not self.deltas:
            forced = "no-statistic"
        eps = None
        if forced is None:
            value = polyval(self.coefficients, relative_l1(indicator, self.prev_indicator, self.reduce))
            eps = value if math.isfinite(value) else None
            if eps is None:
                forced = "no-statistic"
        compute, reason, self.accumulated = accumulate(self.accumulated, eps, forced, self.threshold, agree)
        self.prev_indicator = [u.detach().float().clone() for u in indicator]
        decision = StepDecision(step, compute, reason, None, eps, self.accumulated)
        self.decisions.append(decision)
        return decision
