"""One video at a time: the step clock shared by every module wrapped for one pipeline, and the
record of every DiT call. A pipeline call starts the session; each wrapped module asks it for
the step and branch of the call it serves, so two modules serving one video (Wan2.2's two
experts) count one trajectory together.
"""

import sys
from typing import Dict, List, Optional, Sequence

from easycache.runtime.distributed import distributed_world, same_on_all_ranks


class NoCallSeen(RuntimeError):
    """The pipeline ran a video but no DiT call reached the cache."""


class Session:
    """Calls are numbered within a video: call c is step ``c // len(branches)``, branch
    ``c % len(branches)``; a host that knows the step of a call (diffusers' cache context)
    passes it instead."""

    def __init__(self, branches: Sequence[str]):
        self.branches = tuple(branches)
        self.start(num_steps=0)

    def start(self, num_steps: int) -> None:
        self.num_steps = num_steps
        self.rows: List[dict] = []
        self.dit_seconds = 0.0
        self.blocks_run = self.blocks_total = 0
        self.warnings: List[str] = []
        self.agreement = None  # (world size, whether every rank took the same decisions), once ended

    def next_call(self):
        """(step, branch) of the call about to run."""
        step, branch = divmod(len(self.rows), len(self.branches))
        if self.num_steps and step >= self.num_steps:
            raise RuntimeError(f"the DiT was called more than {self.num_steps} steps x {len(self.branches)} "
                               "branches in one video")
        return step, branch

    def record(self, row: dict, seconds: float, blocks: Optional[tuple] = None) -> None:
        """One finished call: its report row, its DiT time, and (block-level caching) the
        blocks it ran and the blocks the model has. A DiT output with NaN or Inf is announced on
        stderr as it happens."""
        self.rows.append(row)
        if row.get("nonfinite") and len(self.nonfinite_calls()) == 1:
            print(f"easycache: error: the DiT returned NaN or Inf at {describe_call(row)}; the video will be "
                  "invalid", file=sys.stderr)
        self.dit_seconds += seconds
        if blocks is not None:
            self.blocks_run += blocks[0]
            self.blocks_total += blocks[1]

    def nonfinite_calls(self) -> List[dict]:
        return [row for row in self.rows if row.get("nonfinite")]

    def invalid_output(self) -> Optional[str]:
        """Why this video's output is invalid (the DiT returned NaN or Inf), or None."""
        bad = self.nonfinite_calls()
        if not bad:
            return None
        return f"the DiT returned NaN or Inf on {len(bad)} call(s), first at {describe_call(bad[0])}"

    def end(self, no_call_hint: str, collective: bool = True) -> None:
        """The pipeline returned: a video during which no call reached the cache is an error the
        report carries (the caller says what to do about it). Whether the ranks agreed is
        settled here, while the process group surely exists (Wan2.2's generate.py destroys it
        before returning); a collective, unless the video failed on this rank."""
        if not self.rows:
            self.warnings.append(f"the cache saw no DiT call during this video: {no_call_hint}")
        if collective:
            self.agreement = self._agreement()

    def _agreement(self):
        return distributed_world(), same_on_all_ranks([(r["computed"], r.get("estimator")) for r in self.rows])

    def report(self) -> dict:
        """Counts, timings and the per-call record of the last video (a collective under
        torch.distributed when asked before the video ended)."""
        rows = self.rows
        computed = sum(r["computed"] for r in rows)
        report = {
            "num_steps": self.num_steps,
            "dit_calls_total": len(rows),
            "dit_calls_computed": computed,
            "dit_calls_expected": self.num_steps * len(self.branches),
            "ideal_speedup": len(rows) / computed if computed else None,
            "dit_seconds": self.dit_seconds,
        }
        if self.blocks_total:
            # embeddings and head always run: the block work is what a replayed segment saves
            report.update(blocks_run=self.blocks_run, blocks_total=self.blocks_total,
                          ideal_speedup=self.blocks_total / self.blocks_run if self.blocks_run else None)
        estimators = [r["estimator"] for r in rows if "estimator" in r]
        if estimators:  # policies that choose how to estimate a reused call
            report["reused_by_estimator"] = {name: estimators.count(name) for name in dict.fromkeys(estimators)}
        modules = list(dict.fromkeys(r["module"] for r in rows if "module" in r))
        if modules:
            report["modules"] = {name: per_module(rows, name) for name in modules}
        world_size, ranks_agree = self.agreement or self._agreement()
        report.update(world_size=world_size, ranks_agree=ranks_agree, warnings=list(self.warnings),
                      nonfinite_calls=[{k: r[k] for k in ("step", "branch", "module") if k in r}
                                       for r in self.nonfinite_calls()],
                      calls=[dict(r) for r in rows])
        return report


def describe_call(row: dict) -> str:
    where = f"step {row['step']} ({row['branch']} branch"
    return where + (f", {row['module']}-noise expert)" if "module" in row else ")")


def per_module(rows: List[dict], name: str) -> Dict[str, int]:
    mine = [r for r in rows if r.get("module") == name]
    summary = {"dit_calls_total": len(mine), "dit_calls_computed": sum(r["computed"] for r in mine),
               "first_step": mine[0]["step"], "last_step": mine[-1]["step"]}
    if any("blocks_run" in r for r in mine):
        summary["blocks_run"] = sum(r["blocks_run"] for r in mine)
    return summary
