"""EasyCache (arXiv 2507.02860): per denoising step, run the DiT or reuse its transformation vector.

Semantics of the official rule, with its defects fixed:

* transformation vector  delta = v - x  (whole-model output minus raw input), per branch;
* transformation rate    k = mean|v_i - v_j| / mean|x_i - x_j|  over the two most
  recent *computed* steps i, j (re-estimated at every computed step);
* step indicator         eps_t = k * mean|x_t - x_{t-1}| / mean|v_i|  (input change between
  consecutive steps, normalised by the last computed output);
* E += eps_t; reuse while E < threshold, else compute and set E = 0;
* the first ``warmup_steps`` steps and the last step are always computed.

Fixes: a zero or non-finite denominator, or a non-finite statistic, forces a full compute
instead of dividing by zero; all state lives on the instance and ``start_video`` clears it,
so videos in one process do not leak into each other.
"""

import math
from typing import List, Optional

import torch

from easycache.policies.base import (Agree, Context, Decision, Flag, Key, Policy, PolicySpec, SettingError, Tensors,
                                     accumulate, at_least, finite_at_least, finite_or_none, mean_abs, mean_abs_diff,
                                     register)


class EasyCachePolicy(Policy):
    """The decision is taken on branch 0 (Wan: the conditional call), whose statistics give k
    and the norms; every branch keeps its own delta. Memory: x_{t-1}, x_i, v_i and one delta
    per branch, in fp32."""

    name = "easycache"
    fp32_deltas = True

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
        super().start_video(num_steps)
        self.k: Optional[float] = None
        self.accumulated = 0.0
        self.prev_input: Optional[List[torch.Tensor]] = None  # x_{t-1}, every step
        self.computed_input: Optional[List[torch.Tensor]] = None  # x_i, last computed step
        self.computed_output: Optional[List[torch.Tensor]] = None  # v_i
        self.computed_output_norm: Optional[float] = None  # mean|v_i|

    def _indicator(self, x: Tensors) -> Optional[float]:
        """eps_t, or None where it is undefined (no rate yet, zero norm, non-finite)."""
        if self.k is None or self.prev_input is None or not self.computed_output_norm:
            return None
        input_change = mean_abs_diff(x, self.prev_input).item()
        return finite_or_none(self.k * input_change / self.computed_output_norm)

    def decide(self, step: int, branch: int, indicator: Tensors, agree: Agree) -> Decision:
        x = indicator
        forced = None
        if step < self.warmup_steps:
            forced = "warmup"
        elif step >= self.num_steps - 1:
            forced = "last"
        elif not self.has_delta(0):
            forced = "no-statistic"
        eps = None if forced else self._indicator(x)
        if forced is None and eps is None:
            forced = "no-statistic"
        compute, reason, self.accumulated = accumulate(self.accumulated, eps, forced, self.threshold, agree)
        self.prev_input = [u.detach().float().clone() for u in x]
        return Decision(step, compute, reason, self.k, eps, self.accumulated)

    def record_computed(self, key: Key, before: Tensors, after: Tensors) -> None:
        """Store the branch's delta; on the decision branch (0) also update k and v_i."""
        super().record_computed(key, before, after)
        if key[0] != 0:
            return
        x32 = [u.detach().float() for u in before]
        v32 = [u.detach().float() for u in after]
        if self.computed_input is not None:
            input_change = mean_abs_diff(x32, self.computed_input).item()
            output_change = mean_abs_diff(v32, self.computed_output).item()
            rate = output_change / input_change if input_change > 0 else math.nan
            self.k = finite_or_none(rate)
        self.computed_input = [u.clone() for u in x32]
        self.computed_output = [u.clone() for u in v32]
        self.computed_output_norm = finite_or_none(mean_abs(v32).item())


def warmup_below_steps(settings: dict, context: Context) -> dict:
    if settings["warmup_steps"] >= context.num_steps:
        raise SettingError(f"{context.flag_of('warmup_steps')} {settings['warmup_steps']} must be smaller than "
                           f"{context.flag_of('num_steps')} {context.num_steps}")
    return settings


EASYCACHE = register(PolicySpec(
    name=EasyCachePolicy.name,
    summary="EasyCache (the default): reuse the transformation vector while the accumulated relative change "
            "stays below tau",
    make=EasyCachePolicy,
    title=lambda s: f"EasyCache (thresh {s['threshold']}, warm-up {s['warmup_steps']})",
    flags=(
        Flag("thresh", "threshold", float, 0.05, "tau: reuse the transformation vector while the accumulated "
             "relative change stays below it; 0 computes every step", finite_at_least(0)),
        Flag("ret_steps", "warmup_steps", int, 10, "warm-up: the first steps are always computed, as is the last",
             at_least(0)),
    ),
    prepare=warmup_below_steps,
    exact={"threshold": 0.0, "warmup_steps": 0},
    eager={"threshold": 0.5, "warmup_steps": 3},
    knob=("threshold", (0.025, 0.05, 0.1, 0.2)),
))
