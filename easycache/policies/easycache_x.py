"""EasyCache-X: this project's extension of EasyCache (not the paper's rule). Where EasyCache
returns ``x_t + Δ_i`` on a skipped step, this rule keeps each branch's last two computed steps
(s, x, v) -- s the noise level the host passed to the DiT -- and picks, at run time, the
estimator that has been predicting the model best:

* ``delta``         Δ reuse (EasyCache's):       v̂_t = x_t + Δ_i,                  Δ = v - x
* ``delta-extrap``  damped Δ extrapolation:      v̂_t = x_t + Δ_i + w·(Δ_i - Δ_j)
* ``v-extrap``      damped output extrapolation: v̂_t = v_i + w·(v_i - v_j)

with ``w = γ·(s_t - s_i)/(s_i - s_j)`` (γ = 0.5 by default: the undamped line overshoots at
long gaps) and, with one computed step only, w = 0.

Self-calibrated indicator: at every computed step i with two computed steps j, k before it,
each estimator predicts v_i from (j, k); its relative error ``e = mean|v̂_i - v_i| / mean|v_i|``
over the gap is a rate per unit noise level, ``r = e / |s_i - s_j|``. The rate of an estimator
is its worst over the CFG branches (and over the ranks: every rank acts on the same numbers);
the estimator with the lowest rate is used (a setting can pin one), and its rate drives
``eps_t = r·|s_t - s_i|``, accumulated and reset as EasyCache's E: reuse while E < tau. A poor
estimator thus computes more instead of silently losing quality. Warm-up steps and the last
step are computed; no rate yet (fewer than three computed steps) or a non-finite one computes.

s is the timestep the host passes the DiT (Wan, HunyuanVideo and diffusers pass
num_train_timesteps·σ; the rule is invariant to that scale), its largest entry where the host
passes one per token (Wan2.2 TI2V); a host that passes none gets the step index.
"""

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from easycache.policies.base import (Agree, Decision, Flag, Key, Policy, PolicySpec, SettingError, Tensors,
                                     accumulate, at_least, finite_at_least, finite_or_none, mean_abs, mean_abs_diff,
                                     register)

ESTIMATORS = ("delta", "delta-extrap", "v-extrap")  # ties go to the earlier one: Δ reuse first
Computed = Tuple[float, List[torch.Tensor], List[torch.Tensor]]  # (s, x, v) of a computed step, fp32


def extrapolation_weight(gamma: float, s_t: float, newer: Computed, older: Optional[Computed]) -> float:
    """w = γ·(s_t - s_i)/(s_i - s_j); 0 without an older step (or two at one noise level)."""
    if older is None or newer[0] == older[0]:
        return 0.0
    return gamma * (s_t - newer[0]) / (newer[0] - older[0])


def estimate(estimator: str, gamma: float, s_t: float, x_t: Tensors, newer: Computed,
             older: Optional[Computed] = None) -> List[torch.Tensor]:
    """v̂_t from the newer (i) and older (j) computed steps; ``delta`` and ``v`` (reuse of v_i)
    ignore the older step. In fp32."""
    _, x_i, v_i = newer
    w = extrapolation_weight(gamma, s_t, newer, older) if estimator.endswith("-extrap") else 0.0
    if estimator in ("delta", "delta-extrap"):
        out = [x.float() + (v - xi) for x, xi, v in zip(x_t, x_i, v_i)]
        if w:
            out = [o + w * ((v - xi) - (vj - xj)) for o, xi, v, xj, vj in zip(out, x_i, v_i, older[1], older[2])]
        return out
    if estimator in ("v", "v-extrap"):
        return [v + w * (v - vj) for v, vj in zip(v_i, older[2])] if w else [v.clone() for v in v_i]
    raise ValueError(f"unknown estimator {estimator!r}")


def relative_errors(estimates: Sequence[Tensors], actual: Tensors) -> List[float]:
    """mean|v̂ - v| / mean|v| of each estimate, read with one synchronization (NaN where mean|v| is
    0 or not finite)."""
    norm, *differences = torch.stack([mean_abs(actual), *(mean_abs_diff(e, actual) for e in estimates)]).tolist()
    return [d / norm if norm > 0 and math.isfinite(norm) else math.nan for d in differences]


class EasyCacheXPolicy(Policy):
    """Decides on branch 0 for every branch; every branch estimates from its own history.
    Memory: x and v of the last two computed steps per branch, in fp32 (4 latents a branch)."""

    name = "easycache-x"
    uses_timestep = True

    def __init__(self, threshold: float = 0.15, warmup_steps: int = 3, gamma: float = 0.5,
                 estimator: str = "auto"):
        if not (threshold >= 0 and math.isfinite(threshold)):
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if not (0 <= gamma <= 1):
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
        if estimator != "auto" and estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be auto or one of {', '.join(ESTIMATORS)}, got {estimator!r}")
        self.threshold, self.warmup_steps = float(threshold), int(warmup_steps)
        self.gamma, self.estimator = float(gamma), estimator
        self.start_video(num_steps=0)

    @property
    def settings(self) -> dict:
        return {"threshold": self.threshold, "warmup_steps": self.warmup_steps, "gamma": self.gamma,
                "estimator": self.estimator}

    def start_video(self, num_steps: int) -> None:
        super().start_video(num_steps)
        self.position: Dict[int, float] = {}  # branch -> s of the call in progress
        self.history: Dict[int, List[Computed]] = {}  # branch -> its last two computed steps, oldest first
        self.rates: Dict[int, Optional[List[float]]] = {}  # branch -> rate per estimator (None: not yet)
        self.accumulated = 0.0
        self.chosen = "delta"

    def locate(self, step: int, branch: int, timestep: Optional[float]) -> None:
        self.position[branch] = float(step) if timestep is None else timestep

    def _worst_rates(self) -> Optional[List[float]]:
        """Per estimator, the worst rate over the branches; None while any branch has none."""
        if not self.rates or any(r is None for r in self.rates.values()):
            return None
        return [max(rates[e] for rates in self.rates.values()) for e in range(len(ESTIMATORS))]

    def decide(self, step: int, branch: int, indicator, agree: Agree) -> Decision:
        forced, eps, rate = None, None, None
        rates = self._worst_rates()
        if step < self.warmup_steps:
            forced = "warmup"
        elif step >= self.num_steps - 1:
            forced = "last"
        elif rates is None or not self.history.get(0):
            forced = "no-statistic"
        if forced is None:
            if self.estimator == "auto":
                self.chosen = ESTIMATORS[min(range(len(ESTIMATORS)), key=lambda e: rates[e])]
            else:
                self.chosen = self.estimator
            rate = rates[ESTIMATORS.index(self.chosen)]
            eps = finite_or_none(rate * abs(self.position[0] - self.history[0][-1][0]))
            forced = None if eps is not None else "no-statistic"
        compute, reason, self.accumulated = accumulate(self.accumulated, eps, forced, self.threshold, agree)
        return Decision(step, compute, reason, rate, eps, self.accumulated, estimator=None if compute else self.chosen)

    def record_computed(self, key: Key, before: Tensors, after: Tensors) -> None:
        """Measure every estimator on this step (from the two computed steps before it), then keep it."""
        branch = key[0]
        s = self.position[branch]
        x = [u.detach().float().clone() for u in before]
        v = [u.detach().float().clone() for u in after]
        history = self.history.setdefault(branch, [])
        if len(history) == 2:
            gap = abs(s - history[1][0])
            errors = relative_errors([estimate(e, self.gamma, s, x, history[1], history[0]) for e in ESTIMATORS], v)
            measured = torch.tensor([e / gap if gap > 0 else math.nan for e in errors], dtype=torch.float64,
                                    device=v[0].device)  # where the collective runs (NCCL: on the GPU)
            measured = self.most_cautious(measured)
            self.rates[branch] = None if not bool(torch.isfinite(measured).all()) else measured.tolist()
        else:
            self.rates[branch] = None
        history.append((s, x, v))
        del history[:-2]

    def reuse(self, key: Key, before: Tensors) -> List[torch.Tensor]:
        history = self.history[key[0]]
        return estimate(self.chosen, self.gamma, self.position[key[0]], before, history[-1],
                        history[0] if len(history) == 2 else None)

    def has_delta(self, branch: int) -> bool:
        return bool(self.history.get(branch))


def check_settings(settings: dict, context) -> dict:
    if settings["warmup_steps"] >= context.num_steps:
        raise SettingError(f"{context.flag_of('warmup_steps')} {settings['warmup_steps']} must be smaller than "
                           f"{context.flag_of('num_steps')} {context.num_steps}")
    return settings


def gamma_in_unit_interval(value):
    return None if 0 <= value <= 1 else "must lie in [0, 1]"


EASYCACHE_X = register(PolicySpec(
    name=EasyCacheXPolicy.name,
    summary="EasyCache-X (this project's extension, not the paper's): extrapolate instead of reuse, with the "
            "estimator that has been predicting best chosen at run time",
    make=EasyCacheXPolicy,
    title=lambda s: (f"EasyCache-X (thresh {s['threshold']}, warm-up {s['warmup_steps']}, gamma {s['gamma']}, "
                     f"estimator {s['estimator']})"),
    flags=(
        Flag("x_thresh", "threshold", float, 0.15, "tau: reuse while the accumulated estimated error stays below "
             "it; 0 computes every step", finite_at_least(0)),
        Flag("x_ret_steps", "warmup_steps", int, 3, "warm-up: the first steps are always computed, as is the last",
             at_least(0)),
        Flag("x_gamma", "gamma", float, 0.5, "damping of the extrapolations (1: the full line)",
             gamma_in_unit_interval),
        Flag("x_estimator", "estimator", str, "auto", "auto (the lowest measured error rate) or pin one: "
             + ", ".join(ESTIMATORS), lambda value: None if value == "auto" or value in ESTIMATORS else
             f"must be auto or one of {', '.join(ESTIMATORS)}"),
    ),
    prepare=check_settings,
    exact={"threshold": 0.0, "warmup_steps": 0},
    eager={"threshold": 1.0, "warmup_steps": 3},
    knob=("threshold", (0.075, 0.15, 0.36)),
))
