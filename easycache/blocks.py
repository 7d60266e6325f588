"""Block-stack caching (TeaCache-style): the model's forward always runs (embeddings,
head), but its loop over the transformer blocks runs the whole stack or replays the
stack's cached residual ``after - before`` in token space.

Upstream forwards iterate ``for block in self.blocks: x = block(x, **kwargs)``. Instead
of copying those forwards (which differ under sequence parallel), the block list's class
is swapped on the instance for one whose iteration yields a single stack runner. So it
works inside whatever forward the instance has, on each rank's token shard, and under
FSDP (blocks keep their modules and parameters; only iteration changes).
"""

from typing import Callable, List, Optional

import torch

from easycache.runtime import CachedForward, agree_across_ranks

_HOOKED_CLASSES = {}


def _hooked_class(cls):
    """``cls`` whose iteration yields the instance's stack runner."""
    if cls not in _HOOKED_CLASSES:
        def __iter__(self):
            return iter((self.__dict__["_stack_runner"],))
        _HOOKED_CLASSES[cls] = type(f"StackCached{cls.__name__}", (cls,), {"__iter__": __iter__})
    return _HOOKED_CLASSES[cls]


class CachedBlockStack(CachedForward):
    """CachedForward whose decisions act on the block stack ``blocks``.

    ``indicator_of(x_tokens, block_kwargs)`` gives the policy's decision input on the
    decision branch (e.g. the timestep embedding); the policy's ``record_computed`` /
    ``reuse`` receive the stack's input and output tokens.
    """

    def __init__(self, module: torch.nn.Module, blocks: torch.nn.ModuleList, policy, branches,
                 inputs_of, indicator_of: Callable[[torch.Tensor, dict], List[torch.Tensor]]):
        super().__init__(module, policy, branches, inputs_of, outputs_of=None, make_output=None)
        self.blocks = blocks
        self.indicator_of = indicator_of
        self._call_state: Optional[tuple] = None
        if policy is not None:
            blocks.__dict__["_stack_runner"] = self._run_stack
            blocks.__class__ = _hooked_class(type(blocks))

    def disable(self) -> None:
        if "_stack_runner" in self.blocks.__dict__:
            self.blocks.__class__ = type(self.blocks).__mro__[1]
            del self.blocks.__dict__["_stack_runner"]
        super().disable()

    def _cached_call(self, step, branch, x, args, kwargs):
        self._call_state = (step, branch)
        try:
            result = self.inner_forward(*args, **kwargs)
        finally:
            self._call_state = None
        return result, self.policy.decisions[-1].compute

    def _run_stack(self, tokens, **block_kwargs):
        if self._call_state is None:  # the stack used outside a counted call: plain run
            return self._run_blocks(tokens, block_kwargs)
        step, branch = self._call_state
        if branch == 0:
            indicator = self.indicator_of(tokens, block_kwargs)
            self.policy.decide(step, indicator, agree=lambda wants: agree_across_ranks(wants, tokens.device))
        if self.policy.decisions[-1].compute:
            before = tokens.clone()
            tokens = self._run_blocks(tokens, block_kwargs)
            self.policy.record_computed(branch, [before], [tokens])
            return tokens
        return self.policy.reuse(branch, [tokens])[0]

    def _run_blocks(self, tokens, block_kwargs):
        for block in torch.nn.ModuleList.__iter__(self.blocks):
            tokens = block(tokens, **block_kwargs)
        return tokens
