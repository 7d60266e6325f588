"""Block-level caching (TeaCache, MagCache, the delta cache): the model's forward always runs
(embeddings, head), but its loops over the transformer blocks run or replay segments of
blocks, each replayed as ``input + cached delta`` in token space.

Upstream forwards iterate their block lists (Wan: ``for block in self.blocks: x = block(x, **kw)``;
HunyuanVideo: ``img, txt = block(*args)`` over the double-stream blocks, then
``x = block(*args)`` over the single-stream ones). Instead of copying those forwards (which
differ under sequence parallel), each block list's class is swapped on the instance for one
whose iteration yields one runner per segment. So it works inside whatever forward the
instance has, on each rank's token shard, and under FSDP (blocks keep their modules and
parameters; only iteration changes).
"""

import functools
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch

from easycache.runtime import CachedForward

_HOOKED_CLASSES = {}


def _hooked_class(cls):
    """``cls`` whose iteration yields the instance's segment runners while they are armed."""
    if cls not in _HOOKED_CLASSES:
        def __iter__(self):
            runners = self.__dict__["_segment_runners"]()
            return iter(runners) if runners is not None else cls.__iter__(self)
        _HOOKED_CLASSES[cls] = type(f"Cached{cls.__name__}", (cls,), {"__iter__": __iter__})
    return _HOOKED_CLASSES[cls]


class CachedBlockStack(CachedForward):
    """CachedForward whose decisions act on segments of one or more block lists.

    ``blocks``: a ModuleList, or a sequence of them run one after the other (their blocks are
    numbered on, in that order). ``carried``: per list, how many leading positional arguments
    its blocks return (Wan: ``x``; HunyuanVideo's double-stream blocks: ``img, txt``).
    ``segments``: ``[(start, end, cached)]`` covering the blocks (default: all of them, one
    cached segment). Uncached segments always run; segments marked ``True`` run on computed
    calls and replay their delta otherwise; a segment naming a group follows
    ``decision.groups[name]`` (schedules that differ per stack). A segment may span lists:
    its delta is taken from what its first list carries in to what its last list carries
    out, each over the input's leading tokens (dim 1), so a span over HunyuanVideo's image
    stream and its merged image+text stream measures the image tokens.
    ``indicator_of(block_args, block_kwargs)``: the decision input, from the first block call.
    ``arm_on``: when given, the lists yield runners only after this module has run in a
    counted call (HunyuanVideo's xDiT wrapper iterates the blocks itself before the forward).
    """

    def __init__(self, module: torch.nn.Module, blocks: Union[torch.nn.ModuleList, Sequence[torch.nn.ModuleList]],
                 policy, branches, inputs_of, indicator_of: Callable[[tuple, dict], List[torch.Tensor]] = lambda a, k: None,
                 segments: Optional[Sequence[Tuple[int, int, object]]] = None, carried: Sequence[int] = None,
                 arm_on: Optional[torch.nn.Module] = None):
        super().__init__(module, policy, branches, inputs_of, outputs_of=None, make_output=None)
        self.lists = [blocks] if isinstance(blocks, torch.nn.ModuleList) else list(blocks)
        self.carried = list(carried) if carried is not None else [1] * len(self.lists)
        self.num_blocks = sum(len(b) for b in self.lists)
        self.indicator_of = indicator_of
        self.segments = list(segments) if segments is not None else [(0, self.num_blocks, True)]
        self._call_state: Optional[dict] = None
        self._armed = arm_on is None
        self._arm_hook = None
        if policy is None:
            return
        offset = 0
        for index, blocks in enumerate(self.lists):
            runners = self._runners(index, offset, offset + len(blocks))
            blocks.__dict__["_segment_runners"] = lambda runners=runners: runners if self._armed else None
            blocks.__class__ = _hooked_class(type(blocks))
            offset += len(blocks)
        if arm_on is not None:
            self._arm_hook = arm_on.register_forward_pre_hook(self._arm)

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
        if self._arm_hook is not None:
            self._arm_hook.remove()
        super().disable()

    def start_video(self, num_steps: int) -> None:
        super().start_video(num_steps)
        self.blocks_run = 0

    def _cached_call(self, step, branch, x, args, kwargs):
        self._call_state = {"step": step, "branch": branch, "decided": False, "before": {}}
        try:
            result = self.inner_forward(*args, **kwargs)
        finally:
            self._call_state = None
            self._armed = self._arm_hook is None
        decision = self.policy.decisions[-1]
        return result, decision.compute and all((decision.groups or {}).values())

    def _segment_runs(self, cached) -> bool:
        decision = self.policy.decisions[-1]
        if cached is True:
            return decision.compute
        return cached is not False and decision.groups[cached]

    def _run_part(self, seg, list_index, lo, hi, opens, closes, *args, **kwargs):
        """Blocks [lo, hi) of list ``list_index``, part of segment ``seg`` (``opens``: its first
        part, ``closes``: its last), called as the upstream loop calls one block."""
        n = self.carried[list_index]
        state, rest = list(args[:n]), args[n:]
        call = self._call_state
        if call is None:  # the blocks used outside a counted call: plain run
            return self._pack(self._run_blocks(list_index, lo, hi, state, rest, kwargs))
        if not call["decided"]:
            call["decided"] = True
            self._decide(call["step"], call["branch"], self.indicator_of(args, kwargs), state[0].device)
        cached = self.segments[seg][2]
        key = (call["branch"], seg)
        if cached is False or self._segment_runs(cached):
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
        return self._pack(state)

    @staticmethod
    def _pack(state):
        return state[0] if len(state) == 1 else tuple(state)

    def _run_blocks(self, list_index, lo, hi, state, rest, kwargs):
        blocks = self.lists[list_index]
        for i in range(lo, hi):
            out = blocks[i](*state, *rest, **kwargs)
            state = list(out) if isinstance(out, tuple) else [out]
        if self._call_state is not None:
            self.blocks_run += hi - lo
        return state

    def report(self) -> dict:
        report = super().report()
        total = len(self.calls) * self.num_blocks
        # embeddings and head always run: the block work is what a reused segment saves
        report.update(blocks_run=self.blocks_run, blocks_total=total,
                      ideal_speedup=total / self.blocks_run if self.blocks_run else None)
        return report
