"""Model-agnostic runtime around the policy: wraps one instance's forward, keeps the
per-video state with that instance, agrees decisions across ranks, times the DiT and
builds the per-run report. Adapters say how a model's calls map onto steps and branches.
"""

import json
import os
import time
from typing import Callable, List, Optional, Sequence

import torch
import torch.distributed as dist


def distributed_world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def close_distributed() -> None:
    """Tear down the process group the upstream code opened and never closes: a process
    exiting with live gloo threads can abort ("terminate called without an active
    exception") after its work is done, failing the whole torchrun job."""
    if distributed_world() > 1:
        dist.barrier()
        dist.destroy_process_group()


def agree_across_ranks(wants_compute: bool, device: torch.device) -> bool:
    """Compute if any rank wants to: ranks with slightly different statistics never
    diverge, and a sharded model (FSDP, sequence parallel) runs on all ranks or none."""
    if distributed_world() == 1:
        return wants_compute
    flag = torch.tensor([int(wants_compute)], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def sum_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over all ranks (statistics of a per-rank token shard)."""
    if distributed_world() == 1:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def _synchronize(tensors: Sequence[torch.Tensor]) -> None:
    if tensors and tensors[0].is_cuda:
        torch.cuda.synchronize(tensors[0].device)


class CachedForward:
    """Replaces ``module.forward`` on the instance (whatever it is now: the class's,
    a sequence-parallel one bound by the pipeline, an FSDP wrapper's) with a cached one.

    Calls are numbered within a video: call c is step ``c // len(branches)``, branch
    ``c % len(branches)``; branch 0 takes the decision, the others follow it.
    ``policy=None`` runs every call (the baseline) but still counts and times them.
    """

    def __init__(self, module: torch.nn.Module, policy, branches: Sequence[str],
                 inputs_of: Callable[[tuple, dict], List[torch.Tensor]],
                 outputs_of: Callable[[object], List[torch.Tensor]],
                 make_output: Callable[[List[torch.Tensor], tuple, dict], object]):
        if getattr(module, "_easycache", None) is not None:
            raise RuntimeError("a cache is already enabled on this model; call disable() first")
        self.module = module
        self.policy = policy
        self.branches = list(branches)
        self.inputs_of, self.outputs_of, self.make_output = inputs_of, outputs_of, make_output
        self._had_instance_forward = "forward" in module.__dict__
        self.inner_forward = module.forward
        module.forward = self._forward
        module._easycache = self
        self.start_video(num_steps=0)

    def disable(self) -> None:
        """Give the module back the forward it had before."""
        if self._had_instance_forward:
            self.module.forward = self.inner_forward
        else:
            del self.module.forward
        self.module._easycache = None

    def start_video(self, num_steps: int) -> None:
        self.num_steps = num_steps
        self.calls: List[dict] = []
        self.dit_seconds = 0.0
        if self.policy is not None:
            self.policy.start_video(num_steps)

    def _forward(self, *args, **kwargs):
        x = self.inputs_of(args, kwargs)
        _synchronize(x)
        started = time.perf_counter()
        step, branch = divmod(len(self.calls), len(self.branches))
        if self.policy is None:
            result, computed = self.inner_forward(*args, **kwargs), True
        else:
            if self.num_steps and step >= self.num_steps:
                raise RuntimeError(
                    f"the DiT was called more than {self.num_steps} steps x "
                    f"{len(self.branches)} branches in one video")
            result, computed = self._cached_call(step, branch, x, args, kwargs)
        _synchronize(x)
        self.dit_seconds += time.perf_counter() - started
        row = {"step": step, "branch": self.branches[branch], "computed": computed}
        if self.policy is not None and self.policy.decisions:
            d = self.policy.decisions[-1]  # this call's decision (per step, or per branch)
            row.update(reason=d.reason, k=d.k, eps=d.eps, E=d.accumulated)
            if d.groups:
                row["groups"] = dict(d.groups)
        self.calls.append(row)
        return result

    def _decide(self, step, branch, indicator, device) -> None:
        """Take the decision on branch 0 (the others follow it), or on every branch for
        policies whose branches decide independently."""
        if branch == 0 or getattr(self.policy, "decides_per_branch", False):
            extra = {"branch": branch} if branch else {}
            self.policy.decide(step, indicator, agree=lambda wants: agree_across_ranks(wants, device), **extra)

    def _cached_call(self, step, branch, x, args, kwargs):
        """Whole-model caching: decide, then run the model or reuse x + delta."""
        self._decide(step, branch, x, x[0].device)
        if self.policy.decisions[-1].compute:
            result = self.inner_forward(*args, **kwargs)
            self.policy.record_computed(branch, x, self.outputs_of(result))
            return result, True
        return self.make_output(self.policy.reuse(branch, x), args, kwargs), False

    def report(self) -> dict:
        """Counts, timings and the per-step, per-branch record of the last video."""
        computed = sum(c["computed"] for c in self.calls)
        expected = self.num_steps * len(self.branches)
        return {
            "num_steps": self.num_steps,
            "dit_calls_total": len(self.calls),
            "dit_calls_computed": computed,
            "dit_calls_expected": expected,
            "ideal_speedup": len(self.calls) / computed if computed else None,
            "dit_seconds": self.dit_seconds,
            "world_size": distributed_world(),
            "ranks_agree": self.ranks_agree(),
            "calls": [dict(c) for c in self.calls],
        }

    def ranks_agree(self) -> Optional[bool]:
        """Whether every rank took the same decisions (None on one process). Collective."""
        if distributed_world() == 1:
            return None
        mine = [c["computed"] for c in self.calls]
        everyone = [None] * distributed_world()
        dist.all_gather_object(everyone, mine)
        return all(other == mine for other in everyone)


class OutputError(OSError):
    """An output that could not be written, or would overwrite an existing file."""


def atomic_write(final_path: str, write: Callable[[str], object], overwrite: bool = False):
    """Call ``write(tmp_path)`` and rename the result to ``final_path`` only when it is
    complete; an existing ``final_path`` is kept unless ``overwrite``. Returns ``write``'s
    result. The temporary file keeps the extension, as writers choose formats by it."""
    if os.path.exists(final_path) and not overwrite:
        raise OutputError(f"{final_path} exists; pass --overwrite to replace it")
    root, ext = os.path.splitext(final_path)
    tmp_path = f"{root}.incomplete-{os.getpid()}{ext}"
    try:
        result = write(tmp_path)
        if not os.path.exists(tmp_path) or os.path.getsize(tmp_path) == 0:
            raise OutputError(f"could not write {final_path}")
        os.replace(tmp_path, final_path)
        return result
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def write_json(final_path: str, obj: dict, overwrite: bool = False) -> None:
    def write(tmp_path):
        with open(tmp_path, "w") as f:
            json.dump(obj, f, indent=1)
    atomic_write(final_path, write, overwrite=overwrite)


def format_report(report: dict) -> str:
    lines = []
    computed, total = report["dit_calls_computed"], report["dit_calls_total"]
    speedup = report["ideal_speedup"]
    ideal = f"  (ideal speed-up {speedup:.2f}x)" if speedup else ""
    if "blocks_run" in report:  # block-level caching: the model runs, some blocks are replayed
        lines.append(f"  DiT calls with every block computed: {computed}/{total}")
        lines.append(f"  transformer blocks run: {report['blocks_run']}/{report['blocks_total']}{ideal}")
    else:
        lines.append(f"  DiT calls computed: {computed}/{total}{ideal}")
    if total != report["dit_calls_expected"] and report["num_steps"]:
        lines.append(f"  warning: expected {report['dit_calls_expected']} DiT calls "
                     f"({report['num_steps']} steps), saw {total}")
    lines.append(f"  DiT time: {report['dit_seconds']:.2f} s")
    if report["ranks_agree"] is not None:
        lines.append(f"  decisions identical on all {report['world_size']} ranks: "
                     f"{'yes' if report['ranks_agree'] else 'NO'}")
    return "\n".join(lines)
