"""MagCache (https://github.com/Zehong-Ma/MagCache), a peer of EasyCache offered for comparison:
a calibrated schedule of residual magnitude ratios decides reuse.

``ratios[c]`` is the calibrated mean ratio ||residual_c|| / ||residual_{c-branches}|| of the
block stack's residual at DiT call c (branches interleaved), recorded on uncached runs
(``easycache.policies.calibration``). Per branch: after the first ``retention_ratio`` of the
calls, the product of ratios since the cached step estimates how far the residual has
drifted; its error |1 - product| is accumulated, and the cached residual is reused while the
sum stays below the threshold and at most K steps in a row were skipped. Branches decide
independently, as published.
"""

from typing import List, Sequence

from easycache.policies.base import (Agree, Context, Decision, Flag, Policy, PolicySpec, SettingError, at_least,
                                     finite_at_least, fraction, register)


def nearest_resample(values: Sequence[float], length: int) -> List[float]:
    """``values`` stretched to ``length`` by nearest index (for another step count)."""
    if length == 1:
        return [values[-1]]
    scale = (len(values) - 1) / (length - 1)
    return [values[int(round(i * scale))] for i in range(length)]


class MagCachePolicy(Policy):
    """Memory: one residual per branch."""

    name = "magcache"
    level = "blocks"
    indicator = "none"
    per_branch = True

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
        super().start_video(num_steps)
        steps = max(num_steps, 1)
        per_branch = [nearest_resample(self.ratios[b::self.branches], steps) for b in range(self.branches)]
        self.step_ratios = [[per_branch[b][s] for b in range(self.branches)] for s in range(steps)]
        self.accumulated_ratio = [1.0] * self.branches
        self.accumulated_err = [0.0] * self.branches
        self.skipped = [0] * self.branches

    def decide(self, step: int, branch: int, indicator, agree: Agree) -> Decision:
        call = step * self.branches + branch
        if call < int(self.num_steps * self.branches * self.retention_ratio):
            forced = "warmup"
        elif not self.has_delta(branch):
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
        compute = agree(wants_compute)
        if compute and forced is None:
            reason = "threshold" if wants_compute else "peer"
        else:
            reason = forced or "reuse"
        if compute:
            self.accumulated_ratio[branch], self.accumulated_err[branch], self.skipped[branch] = 1.0, 0.0, 0
        return Decision(step, compute, reason, None, err, self.accumulated_err[branch])


def prepare_magcache(settings: dict, context: Context) -> dict:
    path, flag = settings["ratios"], context.flag_of("ratios")
    if path is None:
        raise SettingError(f"--cache magcache needs {flag} FILE: record one with --calibrate FILE")
    ratios = path
    if isinstance(path, str):
        ratios = context.calibration(path, flag).get("magcache_ratios")
        if not isinstance(ratios, list) or not ratios or len(ratios) % context.branches:
            raise SettingError(f"{path} holds no magcache_ratios list for {context.branches} CFG branch(es)")
    return dict(settings, ratios=ratios, branches=context.branches)


MAGCACHE = register(PolicySpec(
    name=MagCachePolicy.name,
    summary="MagCache (a peer, for comparison): a calibrated schedule of residual magnitude ratios",
    make=MagCachePolicy,
    title=lambda s: f"MagCache (thresh {s['threshold']}, K {s['max_skips']}, retention {s['retention_ratio']})",
    flags=(
        Flag("magcache_ratios", "ratios", str, None, "JSON file with calibrated magnitude ratios (written by "
             "--calibrate), required"),
        Flag("magcache_thresh", "threshold", float, 0.12, "error bound", finite_at_least(0)),
        Flag("magcache_K", "max_skips", int, 2, "most consecutive skipped steps", at_least(0)),
        Flag("retention_ratio", "retention_ratio", float, 0.2, "fraction of the first steps always computed",
             fraction),
    ),
    prepare=prepare_magcache,
    exact={"threshold": 0.0},
    eager={"threshold": 0.3},
    knob=("threshold", (0.06, 0.12, 0.24)),
))
