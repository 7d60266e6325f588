"""Block-level caching (TeaCache, the delta cache): the model's forward always runs
(embeddings, head), but its loop over the transformer blocks runs or replays segments of
blocks, each replayed as ``input + cached delta`` in token space.

Upstream forwards iterate ``for block in self.blocks: x = block(x, **kwargs)``. Instead of
copying those forwards (which differ under sequence parallel), the block list's class is
swapped on the instance for one whose iteration yields one runner per segment. So it works
inside whatever forward the instance has, on each rank's token shard, and under FSDP
(blocks keep their modules and parameters; only iteration changes).
"""

import functools
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from easycache.runtime import CachedForward

_HOOKED_CLASSES = {}


def _hooked_class(cls):
    """``cls`` whose iteration yields the instance's segment runners."""
    if cls not in _HOOKED_CLASSES:
        def __iter__(self):
            return iter(self.__dict__["_segment_runners"])
        _HOOKED_CLASSES[cls] = type(f"Cached{cls.__name__}", (cls,), {"__iter__": __iter__})
    return _HOOKED_CLASSES[cls]


class CachedBlockStack(CachedForward):
    """CachedForward whose decisions act on segments of the block list ``blocks``.

    ``segments``: ``[(start, end, cached)]`` covering the blocks (default: the whole stack,
    cached). Cached segments run on computed steps (their delta is stored under the key
    ``(branch, segment)``) and replay it on the others; uncached ones always run.
    ``indicator_of(tokens, block_kwargs)`` gives the decision input on the decision branch.
    """

    def __init__(self, module: torch.nn.Module, blocks: torch.nn.ModuleList, policy, branches,
                 inputs_of, indicator_of: Callable[[torch.Tensor, dict], List[torch.Tensor]] = lambda t, k: None,
                 segments: Optional[Sequence[Tuple[int, int, bool]]] = None):
        super().__init__(module, policy, branches, inputs_of, outputs_of=None, make_output=None)
        self.blocks = blocks
        self.indicator_of = indicator_of
        self.segments = list(segments) if segments is not None else [(0, len(blocks), True)]
        self._call_state: Optional[tuple] = None
        if policy is not None:
            runners = [functools.partial(self._run_segment, i) for i in range(len(self.segments))]
            blocks.__dict__["_segment_runners"] = runners
            blocks.__class__ = _hooked_class(type(blocks))

    def disable(self) -> None:
        if "_segment_runners" in self.blocks.__dict__:
            self.blocks.__class__ = type(self.blocks).__mro__[1]
            del self.blocks.__dict__["_segment_runners"]
        super().disable()

    def start_video(self, num_steps: int) -> None:
        super().start_video(num_steps)
        self.blocks_run = 0

    def _cached_call(self, step, branch, x, args, kwargs):
        self._call_state = (step, branch)
        try:
            result = self.inner_forward(*args, **kwargs)
        finally:
            self._call_state = None
        return result, self.policy.decisions[-1].compute

    def _run_segment(self, index, tokens, **block_kwargs):
        start, end, cached = self.segments[index]
        if self._call_state is None:  # the blocks used outside a counted call: plain run
            return self._run_blocks(start, end, tokens, block_kwargs)
        step, branch = self._call_state
        if index == 0:
            self._decide(step, branch, self.indicator_of(tokens, block_kwargs), tokens.device)
        if not cached:
            return self._run_blocks(start, end, tokens, block_kwargs)
        if self.policy.decisions[-1].compute:
            before = tokens.clone()
            tokens = self._run_blocks(start, end, tokens, block_kwargs)
            self.policy.record_computed((branch, index), [before], [tokens])
            return tokens
        return self.policy.reuse((branch, index), [tokens])[0]

    def _run_blocks(self, start, end, tokens, block_kwargs):
        for i in range(start, end):
            tokens = self.blocks[i](tokens, **block_kwargs)
        if self._call_state is not None:
            self.blocks_run += end - start
        return tokens

    def report(self) -> dict:
        report = super().report()
        total = len(self.calls) * len(self.blocks)
        # embeddings and head always run: the block work is what a reused segment saves
        report.update(blocks_run=self.blocks_run, blocks_total=total,
                      ideal_speedup=total / self.blocks_run if self.blocks_run else None)
        return report
