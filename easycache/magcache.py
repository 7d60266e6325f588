"""MagCache (https://github.com/Zehong-Ma/MagCache), a peer of EasyCache offered for
comparison: a calibrated schedule of residual magnitude ratios decides reuse.

``ratios[c]`` is the calibrated mean ratio ||residual_c|| / ||residual_{c-branches}|| of the
block stack's residual at DiT call c (branches interleaved), recorded once on a baseline run
(see ``MagnitudeRecorder``). Per branch: after the first ``retention_ratio`` of the calls,
the product of ratios since the cached step estimates how far the residual has drifted;
its error |1 - product| is accumulated, and the cached residual is reused while the sum
stays below the threshold and at most K steps in a row were skipped. Branches decide
independently, as published.
"""

from typing import Callable, List, Optional, Sequence

from easycache.policy import DeltaStore, StepDecision
from easycache.teacache import relative_l1


def nearest_resample(values: Sequence[float], length: int) -> List[float]:
    """``values`` stretched to ``length`` by nearest index (for another step count)."""
    if length == 1:
        return [values[-1]]
    scale = (len(values) - 1) / (length - 1)
    return [values[int(round(i * scale))] for i in range(length)]


class MagCachePolicy(DeltaStore):
    decides_per_branch = True

    def __init__(self, ratios: Sequence[float], threshold: float = 0.12, max_skips: int = 2,
                 retention_ratio: float = 0.2, branches: int = 2):
        if len(ratios) < branches or len(ratios) % branches:
            raise ValueError(f"need magnitude ratios for every branch of every step, got {len(ratios)}")
        if threshold < 0 or max_skips < 0 or not 0 <= retention_ratio <= 1:
            raise ValueError("need threshold >= 0, max_skips >= 0 and 0 <= retention_ratio <= 1")
        self.ratios = [float(r) for r in ratios]
        self.threshold, self.max_skips, self.retention_ratio = float(threshold), int(max_skips), float(retention_ratio)
        self.branches = branches
        self.start_video(num_steps=0)

    @property
    def settings(self) -> dict:
        return {"threshold": self.threshold, "max_skips": self.max_skips, "retention_ratio": self.retention_ratio,
                "calibrated_steps": len(self.ratios) // self.branches}

    def start_video(self, num_steps: int) -> None:
        self.num_steps = num_steps
        per_branch = [nearest_resample(self.ratios[b::self.branches], max(num_steps, 1)) for b in range(self.branches)]
        self.step_ratios = [[per_branch[b][s] for b in range(self.branches)] for s in range(max(num_steps, 1))]
        self.accumulated_ratio = [1.0] * self.branches
        self.accumulated_err = [0.0] * self.branches
        self.skipped = [0] * self.branches
        self.start_deltas()
        self.decisions: List[StepDecision] = []

    def decide(self, step: int, indicator=None, agree: Optional[Callable[[bool], bool]] = None,
               branch: int = 0) -> StepDecision:
        call = step * self.branches + branch
        if call < int(self.num_steps * self.branches * self.retention_ratio):
            forced = "warmup"
        elif not any(key[0] == branch for key in self.deltas):
            forced = "no-statistic"
        else:
            forced = None
        err = None
        wants_compute = True
        if forced is None:
            self.accumulated_ratio[branch] *= self.step_ratios[step][branch]
            self.skipped[branch] += 1
            err = abs(1 - self.accumulated_ratio[branch])
            self.accumulated_err[branch] += err
            wants_compute = not (self.accumulated_err[branch] < self.threshold and self.skipped[branch] <= self.max_skips)
        compute = agree(wants_compute) if agree is not None else wants_compute
        if compute and forced is None:
            reason = "threshold" if wants_compute else "peer"
        else:
            reason = forced or "reuse"
        if compute:
            self.accumulated_ratio[branch], self.accumulated_err[branch], self.skipped[branch] = 1.0, 0.0, 0
        decision = StepDecision(step, compute, reason, None, err, self.accumulated_err[branch])
        self.decisions.append(decision)
        return decision


class MagnitudeRecorder:
    """A policy that computes every call and records what the peers' constants need:
    MagCache's residual magnitude ratios (per call, branches interleaved, 1.0 for each
    branch's first call) and, for a TeaCache fit, per step the relative L1 change of the
    indicator (x) and of the block stack's output (y) on the decision branch."""

    decides_per_branch = True

    def __init__(self, branches: int = 2):
        self.branches = branches
        self.start_video(num_steps=0)

    @property
    def settings(self) -> dict:
        return {}

    def start_video(self, num_steps: int) -> None:
        self.num_steps = num_steps
        self.ratios: List[float] = []
        self.indicator_changes: List[float] = []
        self.output_changes: List[float] = []
        self._last_residual, self._last_output, self._last_indicator = {}, None, None
        self._indicator = None
        self.decisions: List[StepDecision] = []

    def decide(self, step, indicator=None, agree=None, branch: int = 0) -> StepDecision:
        if branch == 0:
            self._indicator = [u.detach().float().clone() for u in indicator] if indicator is not None else None
        decision = StepDecision(step, True, "calibration", None, None, 0.0)
        self.decisions.append(decision)
        return decision

    def record_computed(self, key, before, after) -> None:
        branch = key[0] if isinstance(key, tuple) else key
        residual = (after[0] - before[0]).float()
        previous = self._last_residual.get(branch)
        if previous is None:
            self.ratios.append(1.0)
        else:
            self.ratios.append((residual.norm(dim=-1) / previous.norm(dim=-1)).mean().item())
        self._last_residual[branch] = residual
        if branch == 0:
            output = after[0].detach().float()
            if self._last_output is not None and self._indicator is not None and self._last_indicator is not None:
                self.output_changes.append(relative_l1([output], [self._last_output]))
                self.indicator_changes.append(relative_l1(self._indicator, self._last_indicator))
            self._last_output, self._last_indicator = output, self._indicator

    def reuse(self, key, before):
        raise RuntimeError("calibration computes every call")


def merge_calibration(previous: Optional[dict], recorder: MagnitudeRecorder, use_ret_steps: bool) -> dict:
    """Add one video's measurements to a calibration (averaging MagCache's ratios over
    videos, pooling TeaCache's points) and refit TeaCache's degree-4 polynomial."""
    import numpy as np
    videos = 1
    ratios = list(recorder.ratios)
    x, y = list(recorder.indicator_changes), list(recorder.output_changes)
    if previous:
        if len(previous["magcache_ratios"]) != len(ratios) or previous["teacache_use_ret_steps"] != use_ret_steps:
            raise ValueError("the calibration file was made with another step count or TeaCache variant")
        videos += previous["videos"]
        ratios = [(p * previous["videos"] + r) / videos for p, r in zip(previous["magcache_ratios"], ratios)]
        x, y = previous["teacache_points"]["x"] + x, previous["teacache_points"]["y"] + y
    coefficients = np.polyfit(x, y, 4).tolist() if len(x) >= 5 else None
    return {"videos": videos, "magcache_ratios": ratios, "teacache_use_ret_steps": use_ret_steps,
            "teacache_coefficients": coefficients, "teacache_points": {"x": x, "y": y}}
