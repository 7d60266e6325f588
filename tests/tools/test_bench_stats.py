"""The benchmarks' statistics on hand-worked numbers."""

import math

import pytest

from tinywan.bench_stats import Setting, at_speedup, frontier, paired_difference, t975


def setting(label, speedup, *psnr):
    return Setting(label, speedup, {"psnr": list(psnr)})


def test_the_frontier_drops_settings_slower_and_worse_than_another():
    a, b, c, d = setting("a", 1.5, 40, 42), setting("b", 2.0, 20, 20), setting("c", 2.5, 30, 34), setting("d", 3, 25, 25)
    assert [s.label for s in frontier([c, a, d, b])] == ["a", "c", "d"]  # b: slower and worse than c


def test_reading_at_a_speedup_interpolates_each_video_between_the_frontier_settings_around_it():
    curve = [setting("a", 1.5, 40, 42), setting("c", 2.5, 30, 34), setting("b", 2.0, 20, 20)]
    reading = at_speedup(curve, 2.0)  # halfway from a (1.5x) to c (2.5x); b is off the frontier
    assert (reading.low.label, reading.high.label, reading.weight) == ("a", "c", 0.5)
    assert reading.values("psnr") == [35.0, 38.0]
    assert at_speedup(curve, 2.5).values("psnr") == [30, 34]  # exactly on a setting
    assert at_speedup(curve, 3.0) is None and at_speedup(curve, 1.2) is None  # outside what it reached


def test_paired_difference_by_hand():
    # differences 1, 2, 3, 4: mean 2.5, sd sqrt(5/3), t(3) = 3.182: half-width 3.182 * 1.291 / 2
    p = paired_difference([1, 2, 3, 4], [0, 0, 0, 0])
    half = 3.182 * math.sqrt(5 / 3) / 2
    assert (p.mean, p.wins, p.n) == (2.5, 4, 4)
    assert (p.low, p.high) == pytest.approx((2.5 - half, 2.5 + half))
    assert paired_difference([1, 0, 3], [2, 0, 1]).wins == 1  # a tie is not a win


@pytest.mark.parametrize("dof,quantile", [(1, 12.706), (23, 2.069), (30, 2.042), (40, 2.021), (60, 2.000),
                                          (120, 1.980)])
def test_t_quantiles_match_the_tables(dof, quantile):
    assert t975(dof) == pytest.approx(quantile, abs=1.5e-3)
