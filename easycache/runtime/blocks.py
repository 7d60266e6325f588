"""Block-level caching (TeaCache, MagCache, the delta cache): the model's forward always runs
(embeddings, head), but its loops over the transformer blocks run or replay segments of blocks,
each replayed as ``input + cached delta`` in token space.

Upstream forwards iterate their block lists (Wan: ``for block in self.blocks: x = block(x, **kw)``;
HunyuanVideo: ``img, txt = block(*args)`` over the double-stream blocks, then ``x = block(*args)``
over the single-stream ones). Instead of copying those forwards (which differ under sequence
parallel), each block list's class is swapped on the instance for one whose iteration yields
one runner per segment -- only while a counted DiT call is running, so outside it the list is
itself. It works inside whatever forward the instance has, on each rank's token shard, and
under FSDP (blocks keep their modules and parameters; only iteration changes).
"""

import functools
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import torch

from easycache.runtime.distributed import sum_across_ranks
from easycache.runtime.model import CachedForward

_HOOKED_CLASSES = {}


def _hooked_class(cls):
    """``cls`` whose iteration yields the instance's segment runners while they are armed."""
    if cls not in _HOOKED_CLASSES:
        def __iter__(self):
            runners = self.__dict__["_segment_runners"]()
            return iter(runners) if runners is not None else cls.__iter__(self)
        _HOOKED_CLASSES[cls] = type(f"Cached{cls.__name__}", (cls,), {"__iter__": __iter__})
    return _HOOKED_CLASSES[cls]


@dataclass
class BlockLayout:
    """How a host's DiT loops over its blocks. ``lists``: the block lists, run one after the other
    (their blocks are numbered on, in that order), and ``names`` for them. ``carried``: per list, how many leading
    positional arguments its blocks return (Wan: ``x``; HunyuanVideo's double-stream blocks:
    ``img, txt``). ``indicators``: per indicator kind a policy may ask for ("modulated", ...),
    a function ``(hooks) -> indicator_of(block_args, block_kwargs)`` that may register
    removable hooks in ``hooks``. ``sharded_indicator``: the indicator is each rank's token
    shard (its statistics are summed over ranks). ``arm_on``: the lists yield runners only
    after this module ran within the call (HunyuanVideo's xDiT wrapper iterates the blocks
    itself before the forward)."""

    lists: Sequence[torch.nn.ModuleList]
    names: Sequence[str]
    carried: Optional[Sequence[int]] = None
    indicators: dict = field(default_factory=dict)
    sharded_indicator: bool = False
    arm_on: Optional[torch.nn.Module] = None


class CachedBlockStack(CachedForward):
    """CachedForward whose decisions act on segments of the block lists (``policy.segments``). A segment marked True runs on computed calls and
    replays its delta otherwise; False always runs; a group name follows
    ``decision.groups[name]``. A segment may span lists: its delta is taken from what its
    first list carries in to what its last list carries out, each over the input's leading
    tokens (dim 1), so a span over HunyuanVideo's image stream and its merged image+text
    stream measures the image tokens. A call is reported computed when every block ran."""

    def __init__(self, module, policy, session, io, layout: BlockLayout, name=None, inner_forward=None):
        super().__init__(module, policy, session, io, name, inner_forward)
        self.lists = list(layout.lists)
        self.carried = list(layout.carried) if layout.carried is not None else [1] * len(self.lists)
        self.num_blocks = sum(len(b) for b in self.lists)
        self._hooks = []
        kind = policy.indicator
        if kind == "none":
            self.indicator_of = lambda block_args, block_kwargs: None
        elif kind in layout.indicators:
            self.indicator_of = layout.indicators[kind](self._hooks)
        else:
            raise ValueError(f"{type(policy).__name__} needs the '{kind}' indicator, which this host does not offer")
        if layout.sharded_indicator:
            policy.reduce = sum_across_ranks
        self.segments = policy.segments([(name, len(b)) for name, b in zip(layout.names, self.lists)])
        self._call_state: Optional[dict] = None
        self._arms_on_module = layout.arm_on is not None
        self._armed = False
        offset = 0
        for index, blocks in enumerate(self.lists):
            runners = self._runners(index, offset, offset + len(blocks))
            blocks.__dict__["_segment_runners"] = lambda runners=runners: runners if self._active() else None
            blocks.__class__ = _hooked_class(type(blocks))
            offset += len(blocks)
        if layout.arm_on is not None:
            self._hooks.append(layout.arm_on.register_forward_pre_hook(self._arm))

    def _active(self) -> bool:
        return self._call_state is not None and self._armed

    def _runners(self, list_index, first, end):
        """One runner per segment overlapping blocks [first, end) of the concatenated lists."""
        runners = []
        for seg, (start, stop, _) in enumerate(self.segments):
            if start < end and stop > first:
                lo, hi = max(start, first) - first, min(stop, end) - first
                runners.append(functools.partial(self._run_part, seg, list_index, lo, hi,
                                                 start >= first, stop <= end))
        return runners

    def _arm(self, *_) -> None:
        if self._call_state is not None:
            self._armed = True

    def disable(self) -> None:
        for blocks in self.lists:
            if "_segment_runners" in blocks.__dict__:
                blocks.__class__ = type(blocks).__mro__[1]
                del blocks.__dict__["_segment_runners"]
        for hook in self._hooks:
            hook.remove()
        super().disable()

    def _cached_call(self, local_step, branch, x, args, kwargs):
        self._call_state = {"step": local_step, "branch": branch, "decision": None, "before": {}, "blocks_run": 0}
        self._armed = not self._arms_on_module
        try:
            result = self.inner_forward(*args, **kwargs)
            call = self._call_state
        finally:
            self._call_state = None
        if call["decision"] is None:
            raise RuntimeError("the DiT's forward did not iterate its blocks: block-level caching cannot apply")
        return result, call["blocks_run"] == self.num_blocks, call["decision"], (call["blocks_run"], self.num_blocks)

    def _segment_runs(self, cached, decision) -> bool:
        if cached is True:
            return decision.compute
        return cached is not False and decision.groups[cached]

    def _run_part(self, seg, list_index, lo, hi, opens, closes, *args, **kwargs):
        """Blocks [lo, hi) of list ``list_index``, part of segment ``seg`` (``opens``: its first
        part, ``closes``: its last), called as the upstream loop calls one block."""
        n = self.carried[list_index]
        state, rest = list(args[:n]), args[n:]
        call = self._call_state
        if call["decision"] is None:
            call["decision"] = self._decide(call["step"], call["branch"], self.indicator_of(args, kwargs),
                                            state[0].device)
        cached = self.segments[seg][2]
        key = (call["branch"], seg)
        if cached is False or self._segment_runs(cached, call["decision"]):
            if cached is not False and opens:
                call["before"][seg] = [t.clone() for t in state]
            state = self._run_blocks(list_index, lo, hi, state, rest, kwargs)
            if cached is not False and closes:
                before = call["before"].pop(seg)
                after = [a[:, :b.shape[1]] for a, b in zip(state, before)]
                self.policy.record_computed(key, before[:len(after)], after)
        elif opens:  # replay the whole segment here; its later parts pass their input on
            replayed = self.policy.reuse(key, state)
            state = replayed + state[len(replayed):]
        return state[0] if len(state) == 1 else tuple(state)

    def _run_blocks(self, list_index, lo, hi, state, rest, kwargs):
        blocks = self.lists[list_index]
        for i in range(lo, hi):
            out = blocks[i](*state, *rest, **kwargs)
            state = list(out) if isinstance(out, tuple) else [out]
        self._call_state["blocks_run"] += hi - lo
        return state
