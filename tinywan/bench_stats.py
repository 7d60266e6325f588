"""The statistics both benchmarks report: a method's fidelity read at exactly a given speed-up on
its own curve, and paired per-video differences with a 95% interval.

A method run at several settings gives, per setting, its speed-up (total / computed DiT calls,
pooled over the videos) and a per-video PSNR. Its *curve* is the upper frontier of those points
(a setting that is slower and worse than another is never the one a user would pick); the PSNR at
speed-up T is read by linear interpolation between the two frontier settings around T, per video
with the same weights, so per-video differences between methods stay paired.
"""

import math
import statistics
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

# two-sided 95% quantiles of Student's t for 1..30 degrees of freedom
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(dof: int) -> float:
    """Student's t 97.5% quantile (the table, then the Cornish-Fisher expansion, exact to 1e-3)."""
    if dof < 1:
        return math.nan
    if dof <= len(_T975):
        return _T975[dof - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * dof) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * dof ** 2)


@dataclass
class Setting:
    """One setting of a method: its label, speed-up, and per-video values of each metric (in
    video order); ``key`` names the metric that ranks settings (per-video PSNR)."""

    label: str
    speedup: float
    values: Dict[str, List[float]]
    key: str = "psnr"

    @property
    def score(self) -> float:
        return statistics.mean(self.values[self.key])


def frontier(settings: Sequence[Setting]) -> List[Setting]:
    """The settings no other setting beats on both speed-up and mean fidelity, by speed-up."""
    ordered = sorted(settings, key=lambda s: (s.speedup, -s.score))
    kept: List[Setting] = []
    for s in reversed(ordered):  # fastest first: keep a setting only if it beats every faster one
        if not kept or s.score > kept[-1].score:
            kept.append(s)
    return kept[::-1]


@dataclass
class Reading:
    """A method at exactly one speed-up: between frontier settings ``low`` and ``high``."""

    low: Setting
    high: Setting
    weight: float  # 0: low, 1: high

    def values(self, metric: str) -> List[float]:
        return [a + self.weight * (b - a) for a, b in zip(self.low.values[metric], self.high.values[metric])]


def at_speedup(settings: Sequence[Setting], target: float) -> Optional[Reading]:
    """The method read at exactly ``target`` on its frontier; None outside the range it reached."""
    curve = frontier(settings)
    for s in curve:
        if math.isclose(s.speedup, target, rel_tol=1e-9):
            return Reading(s, s, 0.0)
    for low, high in zip(curve, curve[1:]):
        if low.speedup < target < high.speedup:
            return Reading(low, high, (target - low.speedup) / (high.speedup - low.speedup))
    return None


@dataclass
class Paired:
    mean: float
    low: float  # 95% interval of the mean difference
    high: float
    wins: int
    n: int

    def __str__(self):
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}] ({self.wins}/{self.n})"


def paired_difference(ours: Sequence[float], reference: Sequence[float]) -> Paired:
    """Mean of ``ours - reference`` per video, its 95% t interval, and how many videos ours wins."""
    diffs = [a - b for a, b in zip(ours, reference)]
    n = len(diffs)
    mean = statistics.mean(diffs)
    half = t975(n - 1) * statistics.stdev(diffs) / math.sqrt(n) if n > 1 else math.nan
    return Paired(mean, mean - half, mean + half, sum(d > 0 for d in diffs), n)
