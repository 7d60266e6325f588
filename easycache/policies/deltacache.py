"""Profiling-based delta cache ("Model Reveals What to Cache", arXiv 2504.03140), a peer of
EasyCache offered for comparison: a fixed schedule, no runtime indicator.

On full steps every block runs and the delta (output - input) of each background segment is
stored, per CFG branch; on the other steps only the foreground blocks run and each background
segment (an isolated block, or a contiguous run of blocks) replays its stored delta. Which
blocks are background is a per-model profile (the adapters hold the published ones); segments
may follow their own refresh schedule (a named group), as HunyuanVideo's single-stream blocks
do.
"""

from typing import Dict, List, Optional, Sequence, Tuple, Union

from easycache.policies.base import Agree, Decision, Flag, Policy, PolicySpec, at_least, register

# blocks [start, end) numbered on across the model's block stacks: False runs always, True follows
# the main schedule, a stack name follows that stack's own schedule
Segment = Tuple[int, int, Union[bool, str]]


def block_segments(num_blocks: int, foreground: Sequence[int], offset: int = 0,
                   mark: Union[bool, str] = True) -> List[Segment]:
    """Segments covering blocks ``offset .. offset + num_blocks - 1``: each foreground block
    alone, uncached; each maximal run of background blocks one segment marked ``mark``."""
    bad = [b for b in foreground if not 0 <= b < num_blocks]
    if bad:
        raise ValueError(f"blocks {bad} out of range for a stack of {num_blocks} blocks")
    segments, start = [], 0
    for index in range(num_blocks + 1):
        if index == num_blocks or index in foreground:
            if start < index:
                segments.append((start + offset, index + offset, mark))
            if index < num_blocks:
                segments.append((index + offset, index + offset + 1, False))
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


class DeltaCachePolicy(Policy):
    """``cached``: per block stack (by the host's name for it: Wan "blocks", HunyuanVideo
    "double" and "single"), the blocks that replay deltas; None: every block. Cached blocks
    follow the main schedule, or, for a stack named in ``stack_refresh_steps``, refresh on
    those steps only (after the same warm-up; ``decision.groups[stack]``). Memory: one
    delta per cached segment and branch."""

    name = "deltacache"
    level = "blocks"
    indicator = "none"

    def __init__(self, warmup_steps: int = 6, interval: int = 6, refresh_steps: Optional[Sequence[int]] = None,
                 cached: Optional[Dict[str, Sequence[int]]] = None,
                 stack_refresh_steps: Optional[Dict[str, Sequence[int]]] = None):
        self.schedule = RefreshSchedule(warmup_steps, interval, refresh_steps)
        self.cached = None if cached is None else {stack: sorted(set(blocks)) for stack, blocks in cached.items()}
        self.groups = {stack: RefreshSchedule(warmup_steps, refresh_steps=steps)
                       for stack, steps in (stack_refresh_steps or {}).items()}
        self.start_video(num_steps=0)

    @property
    def settings(self) -> dict:
        settings = dict(self.schedule.settings)
        if self.cached is not None:
            settings["cached_blocks"] = {stack: list(blocks) for stack, blocks in self.cached.items()}
        if self.groups:
            settings["groups"] = {name: schedule.settings for name, schedule in self.groups.items()}
        return settings

    def segments(self, stacks: Sequence[Tuple[str, int]]) -> List[Segment]:
        """The profile laid over the model's stacks, ``[(name, number of blocks)]``, in order."""
        unknown = set(self.cached or {}) - {name for name, _ in stacks}
        unknown |= set(self.groups) - {name for name, _ in stacks}
        if unknown:
            raise ValueError(f"the delta cache names block stacks this model does not have: {sorted(unknown)} "
                             f"(it has {', '.join(name for name, _ in stacks)})")
        segments, offset = [], 0
        for name, size in stacks:
            cached = range(size) if self.cached is None else self.cached.get(name, ())
            outside = [b for b in cached if not 0 <= b < size]
            if outside:
                raise ValueError(f"cached blocks {outside} out of range for the {size} blocks of {name}")
            foreground = [b for b in range(size) if b not in cached]
            segments += block_segments(size, foreground, offset, mark=name if name in self.groups else True)
            offset += size
        return segments

    def start_video(self, num_steps: int) -> None:
        super().start_video(num_steps)
        self._refreshed = set()  # schedules whose segments hold deltas of this video

    def decide(self, step: int, branch: int, indicator, agree: Agree) -> Decision:
        # the same on every rank: a schedule needs no agreement
        reason = self.schedule.reason(step, None in self._refreshed)
        runs = {None: reason != "reuse"}
        runs.update((name, s.reason(step, name in self._refreshed) != "reuse") for name, s in self.groups.items())
        self._refreshed.update(name for name, run in runs.items() if run)
        groups = {name: run for name, run in runs.items() if name is not None}
        return Decision(step, runs[None], reason, groups=groups or None)


def delta_title(settings: dict) -> str:
    title = f"Delta cache (full steps: first {settings['warmup_steps']}, then every {settings['interval']}"
    for stack, steps in (settings.get("stack_refresh_steps") or {}).items():
        title += f"; {stack} blocks on {','.join(str(s) for s in steps)}"
    return title + ")"


DELTACACHE = register(PolicySpec(
    name=DeltaCachePolicy.name,
    summary="profiling-based delta cache (a peer, for comparison): a fixed schedule; between full steps only the "
            "foreground blocks run",
    make=DeltaCachePolicy,
    title=delta_title,
    flags=(
        Flag("delta_warmup", "warmup_steps", int, 6, "first steps computed in full", at_least(0)),
        Flag("delta_interval", "interval", int, 6, "afterwards every N-th step is computed in full", at_least(1)),
    ),
    exact={"warmup_steps": 0, "interval": 1},
    eager={"warmup_steps": 3, "interval": 4},
    knob=("interval", (2, 3)),
))
