"""Profiling-based delta cache ("Model Reveals What to Cache", arXiv 2504.03140), a peer of
EasyCache offered for comparison: a fixed schedule, no runtime indicator.

On full steps every block runs and the delta (output - input) of each background segment is
stored, per CFG branch; on the other steps only the foreground blocks run and each background
segment (an isolated block, or a contiguous run of blocks) replays its stored delta.
Published profiles: Wan2.1-14B T2V: steps 0-5 full, then every 6th step (6, 12, ..., 48);
12 foreground blocks of 40. HunyuanVideo: steps 0-5 full; double-stream blocks 6-19 replayed
as one range except every 6th step; 24 of the 40 single-stream blocks replayed, refreshed
on steps 6, 18, 26, 32, 38, 42, 46 and 48.
"""

from typing import Callable, Dict, List, Optional, Sequence, Tuple

from easycache.policy import DeltaStore, StepDecision

WAN21_14B_T2V_FOREGROUND = (1, 8, 9, 21, 22, 23, 24, 33, 34, 35, 36, 39)
# HunyuanVideo's published profile: the cached (background) blocks of each stack, and the steps
# on which the single-stream deltas are refreshed (the double-stream range every 6th step).
HUNYUAN_DOUBLE_CACHED = tuple(range(6, 20))
HUNYUAN_SINGLE_CACHED = (0, 2, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 23, 25, 26, 27, 31, 33)
HUNYUAN_SINGLE_REFRESH_STEPS = (6, 18, 26, 32, 38, 42, 46, 48)


def block_segments(num_blocks: int, foreground: Sequence[int]) -> List[Tuple[int, int, bool]]:
    """[(start, end, cached)] covering range(num_blocks): each foreground block alone,
    uncached; each maximal run of background blocks as one cached segment."""
    bad = [b for b in foreground if not 0 <= b < num_blocks]
    if bad:
        raise ValueError(f"foreground blocks {bad} out of range for a model with {num_blocks} blocks")
    segments, start = [], 0
    for index in range(num_blocks + 1):
        if index == num_blocks or index in foreground:
            if start < index:
                segments.append((start, index, True))
            if index < num_blocks:
                segments.append((index, index + 1, False))
            start = index + 1
    return segments


class RefreshSchedule:
    """When cached segments run in full: the first ``warmup_steps`` steps, then every
    ``interval``-th step, or, given ``refresh_steps``, exactly those steps."""

    def __init__(self, warmup_steps: int = 6, interval: int = 6, refresh_steps: Optional[Sequence[int]] = None):
        if warmup_steps < 0 or interval < 1:
            raise ValueError(f"need warmup_steps >= 0 and interval >= 1, got {warmup_steps}, {interval}")
        self.warmup_steps, self.interval = int(warmup_steps), int(interval)
        self.refresh_steps = None if refresh_steps is None else tuple(sorted(int(s) for s in refresh_steps))

    @property
    def settings(self) -> dict:
        if self.refresh_steps is None:
            return {"warmup_steps": self.warmup_steps, "interval": self.interval}
        return {"warmup_steps": self.warmup_steps, "refresh_steps": list(self.refresh_steps)}

    def _due(self, step: int) -> bool:
        if self.refresh_steps is None:
            return step % self.interval == 0
        return step in self.refresh_steps

    def reason(self, step: int, refreshed: bool) -> str:
        """Why the segments run (warmup, schedule, no-statistic: no delta yet), or reuse."""
        if step < self.warmup_steps:
            return "warmup"
        if self._due(step):
            return "schedule"
        return "reuse" if refreshed else "no-statistic"


class DeltaCachePolicy(DeltaStore):
    """Segments marked ``True`` follow the policy's own schedule (its ``compute``); segments
    naming a group in ``groups`` follow that group's schedule (``decision.groups[name]``), so
    block stacks can refresh on different steps (HunyuanVideo's published profile)."""

    def __init__(self, warmup_steps: int = 6, interval: int = 6, refresh_steps: Optional[Sequence[int]] = None,
                 groups: Optional[Dict[str, RefreshSchedule]] = None):
        self.schedule = RefreshSchedule(warmup_steps, interval, refresh_steps)
        self.groups = dict(groups or {})
        self.start_video(num_steps=0)

    @property
    def settings(self) -> dict:
        settings = dict(self.schedule.settings)
        if self.groups:
            settings["groups"] = {name: schedule.settings for name, schedule in self.groups.items()}
        return settings

    def start_video(self, num_steps: int) -> None:
        self.num_steps = num_steps
        self.start_deltas()
        self._refreshed = set()  # schedules whose segments hold deltas of this video
        self.decisions: List[StepDecision] = []

    def decide(self, step: int, indicator=None, agree: Optional[Callable[[bool], bool]] = None) -> StepDecision:
        # the same on every rank: a schedule needs no agreement
        reason = self.schedule.reason(step, None in self._refreshed)
        runs = {None: reason != "reuse"}
        runs.update((name, s.reason(step, name in self._refreshed) != "reuse") for name, s in self.groups.items())
        self._refreshed.update(name for name, run in runs.items() if run)
        groups = {name: run for name, run in runs.items() if name is not None}
        decision = StepDecision(step, runs[None], reason, None, None, 0.0, groups or None)
        self.decisions.append(decision)
        return decision
