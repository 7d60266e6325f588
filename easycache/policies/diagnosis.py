"""The diagnosis run (--diagnose): an uncached run that measures, along the model's own trajectory,
how well each way of estimating a skipped DiT call would have predicted it, so that on one's own
model one can tell whether reusing EasyCache's transformation vector or extrapolating the output
is the better estimate. Not a selectable cache: it computes every call.

Per CFG branch, at every step t, each estimator predicts v_t from the computed steps i = t - g
and j = t - 2g, as a cache that computed every g-th step would (g = 1, 2, 3); the formulas are
easycache_x's ``estimate``:

* ``delta``         v̂_t = x_t + Δ_i                  (EasyCache's reuse, Δ = v - x)
* ``v``             v̂_t = v_i                        (reuse of the output)
* ``delta-extrap``  v̂_t = x_t + Δ_i + w·(Δ_i - Δ_j)
* ``v-extrap``      v̂_t = v_i + w·(v_i - v_j)        with w = γ·(s_t - s_i)/(s_i - s_j)

Its error is ``mean|v̂_t - v_t| / mean|v_t|``, NaN where mean|v_t| is 0 or not finite. s is the
timestep the host passes the DiT (the step index where it passes none). Memory: per branch x and
v of the six steps before the call, and the call's own, in fp32 on the tensors' device.

``diagnosis_result`` turns the recorders of one video into a JSON-able result::

    {"settings": {"gamma", "gaps", "estimators", "error", "s"},
     "first_step", "last_step",                        # the steps this model served
     "branches": {"cond": {"1": {"steps": [t, ...], "s": [s_t, ...],
                                 "errors": {"delta": [e_t, ...], "v": [...], ...},   # null: not finite
                                 "mean": {"delta": mean over the steps, ...}},
                           "2": {...}, "3": {...}},
                  "uncond": {...}},
     "mean": {"1": {"delta": mean over the branches, ...}, "2": {...}, "3": {...}},
     "best": {"gap": 2, "estimator": "v-extrap", "error": ...}}

where several models serve one video (Wan2.2's experts) the entries after "settings" are per
model under ``"experts": {"high": {...}, "low": {...}}``. ``diagnosis_table`` prints it.
"""

import math
from typing import Dict, List, Optional, Sequence

import torch

from easycache.policies.base import Agree, Decision, Key, Policy, Tensors
from easycache.policies.easycache_x import Computed, estimate, relative_errors

DIAGNOSIS_ESTIMATORS = {
    "delta": "x_t + (v_i - x_i): EasyCache's reuse of the transformation vector",
    "v": "v_i: reuse of the output",
    "delta-extrap": "x_t + D_i + w (D_i - D_j), D = v - x: damped extrapolation of the transformation vector",
    "v-extrap": "v_i + w (v_i - v_j): damped extrapolation of the output",
}
DIAGNOSIS_GAPS = (1, 2, 3)
CONCLUSION_GAP = 2  # the gap the conclusion compares the estimators at (a cache skipping every other step)


class EstimatorRecorder(Policy):
    """Computes every call and, once a call ran, measures every estimator on it for every gap
    whose two earlier steps it holds (branches kept apart)."""

    name = "diagnose"
    indicator = "none"
    per_branch = True
    uses_timestep = True

    def __init__(self, gamma: float = 0.5):
        if not (math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"gamma must be a finite number >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.start_video(num_steps=0)

    @property
    def settings(self) -> dict:
        return {"gamma": self.gamma}

    def start_video(self, num_steps: int) -> None:
        super().start_video(num_steps)
        self.call: Dict[int, tuple] = {}  # branch -> (step, s) of the call in progress
        self.window: Dict[int, Dict[int, Computed]] = {}  # branch -> step -> (s, x, v), the last few steps
        # branch -> gap -> {"steps": [t], "s": [s_t], "errors": {estimator: [error]}}
        self.measured: Dict[int, Dict[int, dict]] = {}
        self.step_as_s = False  # whether a call came without a timestep (s is then the step index)

    def locate(self, step: int, branch: int, timestep: Optional[float]) -> None:
        if timestep is None:
            self.step_as_s = True
        self.call[branch] = (step, float(step) if timestep is None else float(timestep))

    def decide(self, step: int, branch: int, indicator: Optional[Tensors], agree: Agree) -> Decision:
        if self.call.get(branch, (None,))[0] != step:  # a host that does not locate its calls
            self.locate(step, branch, None)
        return Decision(step, True, "diagnosis")

    def record_computed(self, key: Key, before: Tensors, after: Tensors) -> None:
        branch = key[0]
        step, s = self.call[branch]
        x = [u.detach().to(torch.float32, copy=True) for u in before]
        v = [u.detach().to(torch.float32, copy=True) for u in after]
        window = self.window.setdefault(branch, {})
        measured = self.measured.setdefault(branch, {
            gap: {"steps": [], "s": [], "errors": {e: [] for e in DIAGNOSIS_ESTIMATORS}} for gap in DIAGNOSIS_GAPS})
        gaps, estimates = [], []
        for gap in DIAGNOSIS_GAPS:
            newer, older = window.get(step - gap), window.get(step - 2 * gap)
            if newer is None or older is None:
                continue
            gaps.append(gap)
            estimates += [estimate(e, self.gamma, s, x, newer, older) for e in DIAGNOSIS_ESTIMATORS]
        if gaps:
            errors = iter(relative_errors(estimates, v))
            for gap in gaps:
                measured[gap]["steps"].append(step)
                measured[gap]["s"].append(s)
                for e in DIAGNOSIS_ESTIMATORS:
                    measured[gap]["errors"][e].append(next(errors))
        window[step] = (s, x, v)
        for old in [t for t in window if t <= step - 2 * max(DIAGNOSIS_GAPS)]:
            del window[old]

    def reuse(self, key: Key, before: Tensors):
        raise RuntimeError("the diagnosis run computes every call")

    def has_delta(self, branch: int) -> bool:
        return False


def _finite_or_null(value: float) -> Optional[float]:
    return value if math.isfinite(value) else None


def _mean_of_finite(values) -> Optional[float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _best(mean: Dict[str, Dict[str, Optional[float]]]) -> Optional[dict]:
    """The estimator with the lowest mean error at the conclusion's gap (ties: the earlier)."""
    at_gap = mean.get(str(CONCLUSION_GAP), {})
    measured = [(error, e) for e, error in at_gap.items() if error is not None]
    if not measured:
        return None
    error, estimator = min(measured, key=lambda pair: pair[0])
    return {"gap": CONCLUSION_GAP, "estimator": estimator, "error": error}


def _part_result(recorder: EstimatorRecorder, branches: Sequence[str], first_step: int) -> dict:
    by_branch = {}
    for b in sorted(recorder.measured):
        name = branches[b] if b < len(branches) else f"branch {b}"
        by_gap = {}
        for gap, m in recorder.measured[b].items():
            errors = {e: [_finite_or_null(x) for x in m["errors"][e]] for e in DIAGNOSIS_ESTIMATORS}
            by_gap[str(gap)] = {"steps": [first_step + t for t in m["steps"]], "s": list(m["s"]), "errors": errors,
                                "mean": {e: _mean_of_finite(errors[e]) for e in DIAGNOSIS_ESTIMATORS}}
        by_branch[name] = by_gap
    mean = {str(gap): {e: _mean_of_finite([g[str(gap)]["mean"][e] for g in by_branch.values()])
                       for e in DIAGNOSIS_ESTIMATORS} for gap in DIAGNOSIS_GAPS}
    return {"first_step": first_step, "last_step": first_step + recorder.num_steps - 1, "branches": by_branch,
            "mean": mean, "best": _best(mean)}


def diagnosis_result(recorders: Dict[Optional[str], EstimatorRecorder], branches: Sequence[str],
                     first_steps: Optional[Dict[Optional[str], int]] = None) -> dict:
    """The last video's measurements, JSON-able (see the module's docstring): ``recorders`` per
    model serving the video (``{None: recorder}`` for one), ``branches`` the CFG branches' names,
    ``first_steps`` the video step each model's steps start at (default 0)."""
    recorders = dict(recorders)
    first = recorders[next(iter(recorders))]
    settings = {"gamma": first.gamma, "gaps": list(DIAGNOSIS_GAPS), "estimators": dict(DIAGNOSIS_ESTIMATORS),
                "weight": "w = gamma (s_t - s_i) / (s_i - s_j)",
                "error": "mean|v_hat_t - v_t| / mean|v_t| of predicting step t from the computed steps i = t - gap "
                         "and j = t - 2 gap",
                "s": ("the step index (the host passes no timestep)"
                      if any(r.step_as_s for r in recorders.values()) else "the timestep the host passes the DiT")}
    parts = {part: _part_result(recorder, branches, (first_steps or {}).get(part, 0))
             for part, recorder in recorders.items()}
    if list(parts) == [None]:
        return {"settings": settings, **parts[None]}
    return {"settings": settings, "experts": parts}


def diagnosis_of(cache) -> dict:
    """``diagnosis_result`` of a cache whose policies are EstimatorRecorders (``diagnose_pipeline``'s)."""
    return diagnosis_result(cache.policies, cache.session.branches,
                            {name: wrapper.first_step for name, wrapper in cache.wrappers.items()})


def diagnosis_parts(result: dict) -> Dict[Optional[str], dict]:
    """A result's models: {None: the result} for one, else its experts."""
    return result["experts"] if "experts" in result else {None: result}


def _format_error(value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if value >= 1e-3 or value == 0 else f"{value:.2e}"


def _estimator_table(part: dict, indent: str) -> List[str]:
    counts = {gap: max((len(g[str(gap)]["steps"]) for g in part["branches"].values()), default=0)
              for gap in DIAGNOSIS_GAPS}
    header = "".join(f"{f'gap {gap} ({counts[gap]} steps)':>18}" for gap in DIAGNOSIS_GAPS)
    lines = [f"{indent}{'estimator':<14}{header}"]
    for e in DIAGNOSIS_ESTIMATORS:
        lines.append(f"{indent}{e:<14}" + "".join(f"{_format_error(part['mean'][str(gap)][e]):>18}"
                                                 for gap in DIAGNOSIS_GAPS))
    return lines


def _conclusion(part: dict) -> str:
    best = part["best"]
    if best is None:
        return f"none measured (gap {CONCLUSION_GAP} needs {2 * CONCLUSION_GAP + 1} or more steps)"
    if best["estimator"] == "delta":
        return f"delta, EasyCache's reuse ({_format_error(best['error'])})"
    delta = part["mean"][str(CONCLUSION_GAP)]["delta"]
    return f"{best['estimator']} ({_format_error(best['error'])}; delta, EasyCache's reuse: {_format_error(delta)})"


def diagnosis_table(result: dict) -> str:
    """The result as the scripts print it: per model, one row per estimator, its mean error at
    gaps 1, 2 and 3 (over the steps, then the branches), and one line naming the best at gap 2."""
    parts = diagnosis_parts(result)
    some = next(iter(parts.values()))
    branches = ", ".join(some["branches"]) or "none"
    lines = ["Diagnosis: error of estimating the DiT call at step t from the computed steps t-g and t-2g, "
             "mean|v_hat - v| / mean|v|",
             f"  (gamma {result['settings']['gamma']}; mean over the steps, then over the branches: {branches})"]
    if list(parts) == [None]:
        lines += _estimator_table(some, "  ")
        lines.append(f"  best estimator at gap {CONCLUSION_GAP}: {_conclusion(some)}")
        return "\n".join(lines)
    for name, part in parts.items():
        lines.append(f"  {name}-noise expert (steps {part['first_step']}-{part['last_step']}):")
        lines += _estimator_table(part, "    ")
    lines.append(f"  best estimator at gap {CONCLUSION_GAP}: "
                 + "; ".join(f"{name}-noise expert {_conclusion(part)}" for name, part in parts.items()))
    return "\n".join(lines)


def diagnosis_figure(result: dict):
    """A matplotlib Figure (without pyplot, so no backend is chosen for the caller): per gap one
    panel of the error against the step, one line per estimator (the mean over the branches), a
    dotted line where one expert hands over to the next. ImportError without matplotlib."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    parts = diagnosis_parts(result)
    figure = Figure(figsize=(5 * len(DIAGNOSIS_GAPS), 4.2))
    axes = figure.subplots(1, len(DIAGNOSIS_GAPS), sharex=True, squeeze=False)[0]
    for ax, gap in zip(axes, DIAGNOSIS_GAPS):
        positive, plotted = True, False
        for color, e in enumerate(DIAGNOSIS_ESTIMATORS):
            for n, part in enumerate(parts.values()):
                per_step: Dict[int, list] = {}
                for by_gap in part["branches"].values():
                    m = by_gap[str(gap)]
                    for t, error in zip(m["steps"], m["errors"][e]):
                        if error is not None:
                            per_step.setdefault(t, []).append(error)
                steps = sorted(per_step)
                errors = [sum(per_step[t]) / len(per_step[t]) for t in steps]
                positive = positive and all(error > 0 for error in errors)
                plotted = plotted or bool(errors)
                ax.plot(steps, errors, color=f"C{color}", marker=".", lw=1.2, label=e if n == 0 else None)
        for n, part in enumerate(list(parts.values())[1:]):
            ax.axvline(part["first_step"] - 0.5, color="0.5", ls=":", lw=1, label="expert switch" if n == 0 else None)
        if positive and plotted:
            ax.set_yscale("log")
        ax.set_xlim(min(p["first_step"] for p in parts.values()) - 0.5,
                    max(p["last_step"] for p in parts.values()) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"gap {gap}: step t from t-{gap} and t-{2 * gap}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean|v_hat - v| / mean|v|")
    axes[0].legend(fontsize=8)
    figure.suptitle(f"One-step error of each estimator (gamma {result['settings']['gamma']}); "
                    + ("" if list(parts) == [None] else "experts: " + ", ".join(parts) + "; ")
                    + "lower is better")
    figure.tight_layout()
    return figure
