"""The diagnosis run's recorder: its errors equal an independent computation on a stored tinywan
trajectory, hand-worked trajectories give the zeros they must, a zero norm is NaN (null in the
result) and not a crash, its memory is a bounded window, the result and the table; and through
every adapter it is the uncached video, measuring every branch of every part."""

import io
import json
import math

import pytest
import torch

from easycache.policies.base import alone
from easycache.policies.diagnosis import (DIAGNOSIS_ESTIMATORS, DIAGNOSIS_GAPS, EstimatorRecorder, diagnosis_figure,
                                          diagnosis_of, diagnosis_result, diagnosis_table)
from hosts import HOSTS, TinyWan

ESTIMATORS = list(DIAGNOSIS_ESTIMATORS)
STEPS = 12


# --- against an independent computation on tinywan's trajectory -------------------------------

def expected_errors(calls, gamma):
    """Per branch, gap, estimator: [(step, s, error)] from the formulas, in float64, from the
    stored (x, t, v) of every DiT call (cond and uncond alternate)."""
    out = {}
    for branch in (0, 1):
        trajectory = [(torch.cat([u.flatten() for u in x]).double(), float(t.max()),
                       torch.cat([u.flatten() for u in v]).double()) for x, t, v in calls[branch::2]]
        out[branch] = {}
        for gap in DIAGNOSIS_GAPS:
            rows = {e: [] for e in ESTIMATORS}
            for step in range(2 * gap, len(trajectory)):
                (x_t, s_t, v_t), (x_i, s_i, v_i), (x_j, s_j, v_j) = (trajectory[step], trajectory[step - gap],
                                                                    trajectory[step - 2 * gap])
                w = gamma * (s_t - s_i) / (s_i - s_j)
                d_i, d_j = v_i - x_i, v_j - x_j
                estimates = {"delta": x_t + d_i, "v": v_i, "delta-extrap": x_t + d_i + w * (d_i - d_j),
                             "v-extrap": v_i + w * (v_i - v_j)}
                for e in ESTIMATORS:
                    error = (estimates[e] - v_t).abs().mean() / v_t.abs().mean()
                    rows[e].append((step, s_t, float(error)))
            out[branch][gap] = rows
    return out


@pytest.fixture(scope="module")
def tinywan_diagnosis():
    """tinywan, 12 steps, with every DiT call's (x, t, v) captured under the diagnosis run."""
    host = TinyWan()
    from easycache.adapters.wan21 import diagnose_pipeline
    baseline = host.video(host.make(), steps=STEPS)
    pipe = host.make()
    calls, inner = [], pipe.model.forward

    def capture(x, t, **kwargs):
        v = inner(x, t=t, **kwargs)
        calls.append(([u.clone() for u in x], t.clone(), [u.clone() for u in v]))
        return v
    pipe.model.forward = capture
    cache = diagnose_pipeline(pipe, gamma=0.5)
    latents = host.video(pipe, steps=STEPS)
    return cache, calls, baseline, latents


def test_the_errors_equal_an_independent_computation_on_tinywan(tinywan_diagnosis):
    cache, calls, baseline, latents = tinywan_diagnosis
    assert torch.equal(latents, baseline)  # it computes every call: the uncached video
    assert len(calls) == 2 * STEPS and cache.report()["dit_calls_computed"] == 2 * STEPS
    result = diagnosis_of(cache)
    json.dumps(result, allow_nan=False)
    expected = expected_errors(calls, gamma=0.5)
    assert list(result["branches"]) == ["cond", "uncond"]
    assert (result["first_step"], result["last_step"]) == (0, STEPS - 1)
    for branch, name in enumerate(("cond", "uncond")):
        for gap in DIAGNOSIS_GAPS:
            measured = result["branches"][name][str(gap)]
            rows = expected[branch][gap]
            assert measured["steps"] == [step for step, _, _ in rows["delta"]] == list(range(2 * gap, STEPS))
            assert measured["s"] == pytest.approx([s for _, s, _ in rows["delta"]], rel=1e-6)
            for e in ESTIMATORS:
                assert measured["errors"][e] == pytest.approx([err for _, _, err in rows[e]], rel=2e-4, abs=1e-7), e
                assert measured["mean"][e] == pytest.approx(sum(measured["errors"][e]) / len(rows[e]), rel=1e-9)
    for gap in DIAGNOSIS_GAPS:
        for e in ESTIMATORS:
            per_branch = [result["branches"][name][str(gap)]["mean"][e] for name in ("cond", "uncond")]
            assert result["mean"][str(gap)][e] == pytest.approx(sum(per_branch) / 2, rel=1e-9)
    best = min(ESTIMATORS, key=lambda e: result["mean"]["2"][e])
    assert result["best"] == {"gap": 2, "estimator": best, "error": result["mean"]["2"][best]}


def test_memory_is_a_window_of_fp32_latents_on_the_tensors_device(tinywan_diagnosis):
    recorder = tinywan_diagnosis[0].policies[None]
    for branch in (0, 1):
        window = recorder.window[branch]
        assert sorted(window) == list(range(STEPS - 2 * max(DIAGNOSIS_GAPS), STEPS))  # the last six steps
        for s, x, v in window.values():
            assert all(u.dtype == torch.float32 and u.device.type == "cpu" for u in x + v)


def test_the_table_names_each_estimator_and_the_best_at_gap_2(tinywan_diagnosis):
    result = diagnosis_of(tinywan_diagnosis[0])
    table = diagnosis_table(result)
    lines = table.splitlines()
    header = next(line for line in lines if line.strip().startswith("estimator"))
    assert "gap 1 (10 steps)" in header and "gap 2 (8 steps)" in header and "gap 3 (6 steps)" in header
    for e in ESTIMATORS:
        row = next(line for line in lines if line.split()[0] == e)
        assert row.split()[1:] == [f"{result['mean'][str(gap)][e]:.4f}" for gap in DIAGNOSIS_GAPS]
    assert lines[-1].startswith(f"  best estimator at gap 2: {result['best']['estimator']} ")


# --- hand-worked trajectories --------------------------------------------------------------------

def record(recorder, trajectory, branch=0, start=True):
    """Feed one branch's trajectory [(s, x, v)] (s None: the host passes no timestep)."""
    if start:
        recorder.start_video(len(trajectory))
    for step, (s, x, v) in enumerate(trajectory):
        recorder.locate(step, branch, s)
        assert recorder.decide(step, branch, None, alone).compute
        recorder.record_computed((branch, 0), [x], [v])


def errors(recorder, gap, estimator, branch=0):
    return recorder.measured[branch][gap]["errors"][estimator]


# a shifted schedule (s = 1000 sigma', as Wan passes): not evenly spaced, so w is not 1
SIGMAS = [3 * s / (1 + 2 * s) for s in torch.linspace(1, 0.1, 10).tolist()]
S = [1000 * s for s in SIGMAS]


def test_a_trajectory_linear_in_s_is_extrapolated_exactly_at_gamma_1():
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    trajectory = [(s, torch.randn(2, 3, 4), a + (s / 1000) * b) for s in S]
    recorder = EstimatorRecorder(gamma=1.0)
    record(recorder, trajectory)
    for gap in DIAGNOSIS_GAPS:
        assert max(errors(recorder, gap, "v-extrap")) < 1e-5
        assert min(errors(recorder, gap, "v")) > 1e-3  # reuse of v misses the slope
        assert min(errors(recorder, gap, "delta")) > 1e-3
    damped = EstimatorRecorder(gamma=0.5)
    record(damped, trajectory)
    assert min(errors(damped, 2, "v-extrap")) > 1e-3  # half the slope is not exact


def test_a_constant_transformation_vector_is_reused_exactly():
    torch.manual_seed(1)
    delta = torch.randn(4, 4)
    trajectory = [(s, x, x + delta) for s, x in zip(S, torch.randn(len(S), 4, 4))]
    recorder = EstimatorRecorder()
    record(recorder, trajectory)
    for gap in DIAGNOSIS_GAPS:
        assert errors(recorder, gap, "delta") == pytest.approx([0.0] * (len(S) - 2 * gap), abs=1e-6)
        assert errors(recorder, gap, "delta-extrap") == pytest.approx([0.0] * (len(S) - 2 * gap), abs=1e-6)
        assert min(errors(recorder, gap, "v")) > 1e-2


def test_a_constant_output_is_reused_exactly():
    torch.manual_seed(2)
    v = torch.randn(4, 4)
    trajectory = [(s, x, v.clone()) for s, x in zip(S, torch.randn(len(S), 4, 4))]
    recorder = EstimatorRecorder()
    record(recorder, trajectory)
    for gap in DIAGNOSIS_GAPS:
        assert errors(recorder, gap, "v") == [0.0] * (len(S) - 2 * gap)
        assert errors(recorder, gap, "v-extrap") == [0.0] * (len(S) - 2 * gap)
        assert min(errors(recorder, gap, "delta")) > 1e-2


def test_a_zero_output_is_nan_for_its_step_and_null_in_the_result():
    torch.manual_seed(3)
    trajectory = [(None, torch.randn(3), torch.randn(3)) for _ in range(5)]
    trajectory[4] = (None, torch.randn(3), torch.zeros(3))  # mean|v_4| = 0
    recorder = EstimatorRecorder()
    record(recorder, trajectory)
    assert all(math.isnan(e) for e in [errors(recorder, 1, name)[2] for name in ESTIMATORS])  # step 4 at gap 1
    assert all(math.isnan(errors(recorder, 2, name)[0]) for name in ESTIMATORS)  # step 4 at gap 2
    assert recorder.measured[0][1]["s"] == [2.0, 3.0, 4.0]  # no timestep: s is the step
    result = diagnosis_result({None: recorder}, ("cond",))
    json.dumps(result, allow_nan=False)
    gap_1 = result["branches"]["cond"]["1"]
    assert gap_1["errors"]["v"][2] is None and gap_1["mean"]["v"] == pytest.approx(
        sum(errors(recorder, 1, "v")[:2]) / 2)
    assert result["mean"]["2"]["v"] is None and result["best"] is None  # gap 2's only step was the zero one
    assert result["settings"]["s"].startswith("the step index")
    assert "best estimator at gap 2: none measured (gap 2 needs 5 or more steps)" in diagnosis_table(result)


def test_it_computes_every_call_and_never_reuses():
    recorder = EstimatorRecorder()
    recorder.start_video(3)
    assert all(recorder.decide(step, 0, None, lambda wants: False).compute for step in range(3))
    with pytest.raises(RuntimeError, match="computes every call"):
        recorder.reuse((0, 0), [torch.zeros(1)])
    with pytest.raises(ValueError, match="gamma"):
        EstimatorRecorder(gamma=float("nan"))


def test_experts_are_measured_apart_with_their_video_steps():
    torch.manual_seed(4)
    parts = {}
    for name, count in (("high", 5), ("low", 7)):
        parts[name] = EstimatorRecorder()
        for branch in (0, 1):
            record(parts[name], [(s, torch.randn(3), torch.randn(3)) for s in S[:count]], branch, start=branch == 0)
    result = diagnosis_result(parts, ("cond", "uncond"), {"high": 0, "low": 5})
    assert list(result["experts"]) == ["high", "low"] and "branches" not in result
    low = result["experts"]["low"]
    assert (low["first_step"], low["last_step"]) == (5, 11)
    assert low["branches"]["uncond"]["1"]["steps"] == [7, 8, 9, 10, 11]  # nothing across the switch
    assert result["experts"]["high"]["branches"]["cond"]["3"]["steps"] == []
    table = diagnosis_table(result)
    assert "  high-noise expert (steps 0-4):" in table and "  low-noise expert (steps 5-11):" in table
    last = table.splitlines()[-1]
    assert last.startswith("  best estimator at gap 2: high-noise expert ") and "; low-noise expert " in last
    png = io.BytesIO()
    diagnosis_figure(result).savefig(png, format="png")  # a gap without steps plots nothing, without failing
    assert png.getvalue()[:4] == b"\x89PNG"


# --- through every adapter -------------------------------------------------------------------------

@pytest.mark.parametrize("host", HOSTS, ids=lambda host: host.name)
def test_through_every_adapter_the_diagnosis_run_is_the_uncached_video(host):
    baseline = host.video(host.make())
    pipe = host.make()
    adapter = host.adapter  # each adapter's API: diagnose_pipeline, or diagnose_sampler (HunyuanVideo's sampler)
    diagnose = getattr(adapter, "diagnose_pipeline", None) or adapter.diagnose_sampler
    cache = diagnose(pipe, gamma=0.25)
    assert all(isinstance(p, EstimatorRecorder) and p.gamma == 0.25 for p in cache.policies.values())
    assert torch.equal(host.video(pipe), baseline)
    report = cache.report()
    assert report["cache"] == "diagnose" and report["dit_calls_computed"] == report["dit_calls_total"]
    result = diagnosis_of(cache)
    json.dumps(result, allow_nan=False)
    parts = result.get("experts", {None: result})
    assert len(parts) == len(host.dits(pipe))
    for part in parts.values():
        served = part["last_step"] - part["first_step"] + 1
        assert len(part["branches"]) == host.branches
        for by_gap in part["branches"].values():
            assert len(by_gap["1"]["steps"]) == served - 2 and by_gap["1"]["steps"][0] == part["first_step"] + 2
            assert all(e is not None for e in by_gap["1"]["errors"]["delta"])
    assert sum(p["last_step"] - p["first_step"] + 1 for p in parts.values()) == host.steps
