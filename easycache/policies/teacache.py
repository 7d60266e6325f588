"""TeaCache (https://github.com/ali-vilab/TeaCache), a peer of EasyCache offered for comparison.

Per step the indicator is the relative L1 change of the timestep-modulated block input
(Wan2.1: the time embedding ``e``, or its projection ``e0`` with ``use_ret_steps``;
HunyuanVideo: the first double block's modulated image tokens), rescaled by a fitted
polynomial and accumulated; the block stack's cached residual is reused while the sum stays
below the threshold. Forced steps, as published: first and last step; with
``use_ret_steps`` the first 5 steps and no forced last. The official script keeps an
accumulator per CFG branch; both see the same timestep, so one decision per step (taken on
the conditional call) is the same rule.
"""

import math
import os
from typing import List, Optional, Sequence

import torch

from easycache.policies.base import (Agree, Context, Decision, Flag, Policy, PolicySpec, SettingError, Tensors,
                                     accumulate, finite_at_least, register, relative_l1)


def polyval(coefficients: Sequence[float], value: float) -> float:
    """numpy.poly1d(coefficients)(value): Horner's rule, highest power first."""
    result = 0.0
    for c in coefficients:
        result = result * value + c
    return result


class TeaCachePolicy(Policy):
    """Accumulated, polynomial-rescaled change of the modulated input decides reuse of the
    block stack's residual (one delta per branch). Memory: the previous indicator and one
    residual per branch."""

    name = "teacache"
    level = "blocks"

    def __init__(self, threshold: float, coefficients: Sequence[float], use_ret_steps: bool = False):
        if not (threshold >= 0 and math.isfinite(threshold)):
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
        if not coefficients:
            raise ValueError("TeaCache needs rescaling coefficients")
        self.threshold = float(threshold)
        self.coefficients = [float(c) for c in coefficients]
        self.use_ret_steps = bool(use_ret_steps)
        self.indicator = "modulated-projected" if use_ret_steps else "modulated"
        self.warmup_steps = 5 if use_ret_steps else 1
        self.force_last = not use_ret_steps
        self.start_video(num_steps=0)

    @property
    def settings(self) -> dict:
        return {"threshold": self.threshold, "use_ret_steps": self.use_ret_steps, "coefficients": self.coefficients}

    def start_video(self, num_steps: int) -> None:
        super().start_video(num_steps)
        self.accumulated = 0.0
        self.prev_indicator: Optional[List[torch.Tensor]] = None

    def decide(self, step: int, branch: int, indicator: Tensors, agree: Agree) -> Decision:
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
        return Decision(step, compute, reason, None, eps, self.accumulated)


def parse_coefficients(value, use_ret_steps: bool, flag: str, context: Context) -> List[float]:
    """A comma-separated polynomial, or the fit in a --calibrate file."""
    if os.path.isfile(value):
        calibration = context.calibration(value, flag)
        if not calibration.get("teacache_coefficients"):
            raise SettingError(f"{value} holds no TeaCache fit (record one with --calibrate on 6 or more steps)")
        if bool(calibration.get("teacache_use_ret_steps")) != use_ret_steps:
            raise SettingError(f"{value} holds no TeaCache fit for {'' if use_ret_steps else 'no '}--use_ret_steps")
        return [float(c) for c in calibration["teacache_coefficients"]]
    try:
        return [float(c) for c in value.split(",")]
    except ValueError:
        raise SettingError(f"{flag} must be comma-separated numbers or a calibration file, got {value}") from None


def prepare_teacache(settings: dict, context: Context) -> dict:
    coefficients = settings["coefficients"]
    if coefficients is None:
        coefficients = context.published("teacache", "coefficients", settings)
    elif isinstance(coefficients, str):
        coefficients = parse_coefficients(coefficients, settings["use_ret_steps"], context.flag_of("coefficients"),
                                          context)
    return dict(settings, coefficients=list(coefficients))


TEACACHE = register(PolicySpec(
    name=TeaCachePolicy.name,
    summary="TeaCache (a peer, for comparison): reuse the block stack's residual while the rescaled change of the "
            "timestep-modulated input stays small",
    make=TeaCachePolicy,
    title=lambda s: f"TeaCache (thresh {s['threshold']}{', ret steps' if s.get('use_ret_steps') else ''})",
    flags=(
        Flag("teacache_thresh", "threshold", float, 0.2, "reuse while the accumulated rescaled change stays "
             "below it", finite_at_least(0)),
        Flag("use_ret_steps", "use_ret_steps", bool, False, "indicator on the projected embedding e0; first 5 "
             "steps computed, last step not forced", switch=True),
        Flag("teacache_coefficients", "coefficients", str, None, "comma-separated rescaling polynomial, highest "
             "power first, or a --calibrate file"),
    ),
    prepare=prepare_teacache,
    exact={"threshold": 0.0},
    eager={"threshold": 3.0},
    knob=("threshold", (0.05, 0.1, 0.2)),
))
