"""Profiling-based delta cache ("Model Reveals What to Cache", arXiv 2504.03140), a peer of
EasyCache offered for comparison: a fixed schedule, no runtime indicator.

On full steps every block runs and the delta (output - input) of each background segment is
stored, per CFG branch; on the other steps only the foreground blocks run and each background
segment (an isolated block, or a contiguous run of blocks) replays its stored delta.
Published profile, Wan2.1-14B T2V: steps 0-5 full, then every 6th step (6, 12, ..., 48);
12 foreground blocks of 40.
"""

from typing import Callable, List, Optional, Sequence, Tuple

import torch

from easycache.policy import StepDecision

WAN21_14B_T2V_FOREGROUND = (1, 8, 9, 21, 22, 23, 24, 33, 34, 35, 36, 39)


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


class DeltaCachePolicy:
    """Full steps: ``step < warmup_steps`` or ``step % interval == 0``."""

    def __init__(self, warmup_steps: int = 6, interval: int = 6):
        if warmup_steps < 0 or interval < 1:
            raise ValueError(f"need warmup_steps >= 0 and interval >= 1, got {warmup_steps}, {interval}")
        self.warmup_steps, self.interval = int(warmup_steps), int(interval)
        self.start_video(num_steps=0)

    @property
    def settings(self) -> dict:
        return {"warmup_steps": self.warmup_steps, "interval": self.interval}

    def start_video(self, num_steps: int) -> None:
        self.num_steps = num_steps
        self.deltas = {}
        self.decisions: List[StepDecision] = []

    def decide(self, step: int, indicator=None, agree: Optional[Callable[[bool], bool]] = None) -> StepDecision:
        if step < self.warmup_steps:
            reason = "warmup"
        elif step % self.interval == 0:
            reason = "schedule"
        elif not self.deltas:
            reason = "no-statistic"
        else:
            reason = "reuse"
        compute = reason != "reuse"  # the same on every rank: a schedule needs no agreement
        decision = StepDecision(step, compute, reason, None, None, 0.0)
        self.decisions.append(decision)
        return decision

    def record_computed(self, key, before: Sequence[torch.Tensor], after: Sequence[torch.Tensor]) -> None:
        self.deltas[key] = [a.detach() - b.detach() for a, b in zip(after, before)]

    def reuse(self, key, before: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        return [b + d.to(b.dtype) for b, d in zip(before, self.deltas[key])]
