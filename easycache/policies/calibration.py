"""The calibration run (--calibrate): an uncached run that records the constants the calibrated
peers need for a model and a step count -- MagCache's residual magnitude ratios and the points
TeaCache's rescaling polynomial is fitted to. Not a selectable cache: it computes every call."""

from typing import List, Optional

from easycache.policies.base import Agree, Decision, Key, Policy, Tensors, relative_l1


class MagnitudeRecorder(Policy):
    """Records per call the block stack's residual magnitude ratio (branches interleaved, 1.0 for
    each branch's first call) and, for a TeaCache fit, per step the relative L1 change of the
    modulated input (x) and of the block stack's output (y) on the decision branch."""

    name = "calibrate"
    level = "blocks"
    per_branch = True

    def __init__(self, branches: int = 2, use_ret_steps: bool = False):
        self.branches = branches
        self.use_ret_steps = use_ret_steps
        self.indicator = "modulated-projected" if use_ret_steps else "modulated"
        self.start_video(num_steps=0)

    @property
    def settings(self) -> dict:
        return {}

    def start_video(self, num_steps: int) -> None:
        super().start_video(num_steps)
        self.ratios: List[float] = []
        self.indicator_changes: List[float] = []
        self.output_changes: List[float] = []
        self._last_residual, self._last_output, self._last_indicator = {}, None, None
        self._indicator = None

    def decide(self, step: int, branch: int, indicator: Optional[Tensors], agree: Agree) -> Decision:
        if branch == 0:
            self._indicator = [u.detach().float().clone() for u in indicator] if indicator is not None else None
        return Decision(step, True, "calibration")

    def record_computed(self, key: Key, before: Tensors, after: Tensors) -> None:
        branch = key[0]
        residual = (after[0] - before[0]).float()
        previous = self._last_residual.get(branch)
        if previous is None:
            self.ratios.append(1.0)
        else:
            self.ratios.append((residual.norm(dim=-1) / previous.norm(dim=-1)).mean().item())
        self._last_residual[branch] = residual
        if branch == 0:
            output = after[0].detach().float()
            if self._last_output is not None and self._indicator is not None and self._last_indicator is not None:
                self.output_changes.append(relative_l1([output], [self._last_output]))
                self.indicator_changes.append(relative_l1(self._indicator, self._last_indicator))
            self._last_output, self._last_indicator = output, self._indicator

    def reuse(self, key: Key, before: Tensors):
        raise RuntimeError("calibration computes every call")


def merge_calibration(previous: Optional[dict], recorder: MagnitudeRecorder) -> dict:
    """Add one video's measurements to a calibration (averaging MagCache's ratios over videos,
    pooling TeaCache's points) and refit TeaCache's degree-4 polynomial."""
    import numpy as np
    videos = 1
    ratios = list(recorder.ratios)
    x, y = list(recorder.indicator_changes), list(recorder.output_changes)
    if previous:
        if len(previous["magcache_ratios"]) != len(ratios) or previous["teacache_use_ret_steps"] != recorder.use_ret_steps:
            raise ValueError("the calibration file was made with another step count or TeaCache variant")
        videos += previous["videos"]
        ratios = [(p * previous["videos"] + r) / videos for p, r in zip(previous["magcache_ratios"], ratios)]
        x, y = previous["teacache_points"]["x"] + x, previous["teacache_points"]["y"] + y
    coefficients = np.polyfit(x, y, 4).tolist() if len(x) >= 5 else None
    return {"videos": videos, "magcache_ratios": ratios, "teacache_use_ret_steps": recorder.use_ret_steps,
            "teacache_coefficients": coefficients, "teacache_points": {"x": x, "y": y}}
