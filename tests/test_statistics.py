"""The paired t-test of the method study against scipy and against a hand computation."""

import math

import pytest
import numpy as np
import scipy.stats
from scipy import stats

from modeling_attg_mae.evaluation import paired_comparison, student_t_quantile, student_t_two_sided_p
from modeling_attg_mae.evaluation.statistics import (
    holm_adjust,
    minimum_detectable_difference,
    paired_t_power,
    pairs_needed,
    wilcoxon_signed_rank,
)

# (control, treatment): n = 3, 5, 10, two-sided p from ~5e-19 to ~0.91 (the last test checks the span)
CASES = [
    ([40.7, 72.5, 76.5], [40.8, 72.4, 77.1]),
    ([40.7, 72.5, 76.5], [42.3, 73.9, 78.6]),
    ([40.7, 72.5, 76.5], [100.8, 132.4, 137.1]),
    ([40.1, 74.3, 41.3, 69.2, 47.0], [41.4, 75.2, 40.6, 68.0, 46.4]),
    ([40.1, 74.3, 41.3, 69.2, 47.0], [42.9, 76.7, 42.1, 69.4, 47.9]),
    ([40.1, 74.3, 41.3, 69.2, 47.0], [101.4, 135.2, 100.6, 127.9, 106.4]),
    ([79.9, 79.2, 67.4, 66.0, 67.5, 55.6, 45.4, 68.9, 61.0, 52.4],
     [79.4, 79.0, 67.9, 67.0, 67.4, 57.0, 44.7, 69.4, 62.0, 52.6]),
    ([79.9, 79.2, 67.4, 66.0, 67.5, 55.6, 45.4, 68.9, 61.0, 52.4],
     [80.9, 80.4, 69.3, 68.5, 68.9, 58.5, 46.2, 70.8, 63.4, 54.0]),
    ([79.9, 79.2, 67.4, 66.0, 67.5, 55.6, 45.4, 68.9, 61.0, 52.4],
     [84.4, 83.9, 72.8, 72.0, 72.4, 62.0, 49.7, 74.3, 66.9, 57.5]),
    ([79.9, 79.2, 67.4, 66.0, 67.5, 55.6, 45.4, 68.9, 61.0, 52.4],
     [139.4, 138.9, 127.8, 127.0, 127.4, 117.0, 104.7, 129.3, 121.9, 112.5]),
]
RTOL = 1e-8


@pytest.mark.parametrize("control, treatment", CASES)
def test_paired_comparison_matches_scipy(control, treatment):
    result = paired_comparison(treatment, control)
    reference = scipy.stats.ttest_rel(treatment, control)
    n = len(control)
    differences = [a - b for a, b in zip(treatment, control)]
    assert result["n"] == n and result["df"] == n - 1
    assert result["t"] == pytest.approx(reference.statistic, rel=RTOL)
    assert result["p"] == pytest.approx(reference.pvalue, rel=RTOL)
    assert result["significant"] == (reference.pvalue < 0.05)
    mean = sum(differences) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    half_width = scipy.stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    assert result["ci_low"] == pytest.approx(mean - half_width, rel=RTOL)
    assert result["ci_high"] == pytest.approx(mean + half_width, rel=RTOL)
    assert result["treatment_sd"] == pytest.approx(scipy.stats.tstd(treatment), rel=RTOL)
    assert result["control_sd"] == pytest.approx(scipy.stats.tstd(control), rel=RTOL)
    assert (result["positive"], result["negative"], result["zero"]) == (
        sum(d > 0 for d in differences), sum(d < 0 for d in differences), sum(d == 0 for d in differences))


def test_cases_span_the_p_range():
    # guards the table above: the comparison with scipy must cover tiny and large p on every n
    pvalues = [scipy.stats.ttest_rel(t, c).pvalue for c, t in CASES]
    assert min(pvalues) < 1e-6 and max(pvalues) > 0.9
    assert {len(c) for c, _ in CASES} == {3, 5, 10}


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 30, 1000])
@pytest.mark.parametrize("q", [1e-6, 0.001, 0.025, 0.3, 0.5, 0.6, 0.9, 0.975, 0.995, 1 - 1e-6])
def test_quantile_matches_scipy(q, df):
    expected = scipy.stats.t.ppf(q, df)
    assert student_t_quantile(q, df) == pytest.approx(expected, rel=RTOL, abs=0)  # abs=0: relative everywhere


@pytest.mark.parametrize("df", [1, 2, 4, 9, 30, 1000])
@pytest.mark.parametrize("t", [0.0, 0.01, 0.5, 1.0, 2.0, 4.2, 10.0, 50.0, -3.0])
def test_two_sided_p_matches_scipy(t, df):
    assert student_t_two_sided_p(t, df) == pytest.approx(2 * scipy.stats.t.sf(abs(t), df), rel=RTOL)


def test_hand_computed_example():
    # differences 1, 2, 3, 4, 5: mean 3, sample variance (4 + 1 + 0 + 1 + 4) / 4 = 2.5, n = 5, df = 4
    control = [10.0] * 5
    treatment = [11.0, 12.0, 13.0, 14.0, 15.0]
    result = paired_comparison(treatment, control)
    t = 3 / (math.sqrt(2.5) / math.sqrt(5))  # = 3 / sqrt(0.5) = 4.2426...
    assert t == pytest.approx(4.242640687119285, rel=1e-15)
    # df = 4 has a closed form: P(|T| > t) = 1 - s (3 - s^2) / 2 with s = t / sqrt(4 + t^2)
    s = t / math.sqrt(4 + t * t)
    p = 1 - s * (3 - s * s) / 2  # = 0.013235...
    assert result["differences"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert result["diff_mean"] == 3.0
    assert result["diff_sd"] == pytest.approx(math.sqrt(2.5), rel=1e-15)
    assert result["t"] == pytest.approx(t, rel=1e-12)
    assert result["p"] == pytest.approx(p, rel=1e-12)
    assert result["p"] == pytest.approx(0.013235599563682, rel=1e-12)
    # t_{0.975, 4} = 2.7764451051977..., half width = 2.7764... * sqrt(0.5)
    half_width = 2.7764451051977934 * math.sqrt(0.5)
    assert (result["ci_low"], result["ci_high"]) == (pytest.approx(3 - half_width, rel=1e-12),
                                                     pytest.approx(3 + half_width, rel=1e-12))
    assert result["significant"] and result["alpha"] == 0.05 and result["confidence"] == 0.95
    assert (result["positive"], result["negative"], result["zero"]) == (5, 0, 0)
    assert (result["treatment_mean"], result["control_mean"], result["control_sd"]) == (13.0, 10.0, 0.0)


def test_identical_differences_leave_the_t_test_undefined_not_certain():
    # a coarse metric (one test image = 2.0 points) moves every seed by the same step: the t-test is undefined, and
    # a p of 0 would read as a bar met; the Wilcoxon p stays defined (2 / 2^3 for three equal signs)
    shifted = paired_comparison([3.0, 5.0, 7.0], [1.0, 3.0, 5.0])
    assert math.isnan(shifted["p"]) and math.isnan(shifted["t"]) and shifted["diff_sd"] == 0.0
    assert shifted["degenerate"] and not shifted["significant"] and shifted["wilcoxon_p"] == 0.25
    assert shifted["ci_low"] == shifted["ci_high"] == 2.0
    worse = paired_comparison([1.0, 3.0], [3.0, 5.0])
    assert math.isnan(worse["p"]) and not worse["significant"] and worse["negative"] == 2
    same = paired_comparison([1.0, 3.0, 5.0], [1.0, 3.0, 5.0])
    assert (same["p"], same["t"], same["ci_low"], same["ci_high"], same["zero"]) == (1.0, 0.0, 0.0, 0.0, 3)
    assert not same["significant"] and same["degenerate"] and same["wilcoxon_p"] == 1.0
    spread = paired_comparison([3.0, 5.0, 8.0], [1.0, 3.0, 5.0])
    assert not spread["degenerate"] and spread["p"] == pytest.approx(stats.ttest_rel([3, 5, 8], [1, 3, 5]).pvalue)


@pytest.mark.parametrize("n", [5, 6, 9, 13, 20, 40])
def test_wilcoxon_is_scipys_exact_test_without_ties(n):
    differences = np.random.default_rng(n).normal(0.8, 2.0, n)
    result = wilcoxon_signed_rank(differences)
    reference = stats.wilcoxon(differences, method="exact")
    assert result["p"] == pytest.approx(reference.pvalue, rel=1e-12)
    assert min(result["w_plus"], result["w_minus"]) == reference.statistic
    assert result["w_plus"] + result["w_minus"] == n * (n + 1) / 2


def test_wilcoxon_with_ties_and_zeros_counts_every_sign_pattern():
    # ties share their mean rank, zeros are dropped (Wilcoxon's rule): scipy's permutation test enumerates all 2^m
    # sign patterns below 14 differences, so it is exact too
    differences = [1.0, 1.0, -2.0, 3.0, 3.0, 3.0, 0.0, 4.0, -1.0, 2.0]
    result = wilcoxon_signed_rank(differences)
    # |d| = 1, 1, 1 share rank 2, 2, 2 share 4.5, 3, 3, 3 share 7, 4 is 9: W- = 2 (the -1) + 4.5 (the -2)
    assert result["n"] == 9 and result["w_minus"] == 2.0 + 4.5 and result["w_plus"] == 45 - 6.5
    reference = stats.wilcoxon(differences)
    assert result["p"] == pytest.approx(reference.pvalue, rel=1e-9)
    # hand count: 5 equal positive signs, the smallest two-sided p there is, 2 / 2^5
    assert wilcoxon_signed_rank([2.0] * 5)["p"] == 0.0625 and wilcoxon_signed_rank([0.0, 0.0])["p"] == 1.0


def test_holm_against_hand_values():
    # sorted 0.01, 0.03, 0.04, 0.2 with m = 4: 4 x 0.01, 3 x 0.03, max(0.09, 2 x 0.04), max(0.09, 0.2)
    assert holm_adjust([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm_adjust([0.5, 0.6]) == [1.0, 1.0]
    adjusted = holm_adjust([0.01, math.nan])
    assert adjusted[0] == 0.02 and math.isnan(adjusted[1])  # an undefined test still counts as a hypothesis
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm_adjust([1.5])


@pytest.mark.parametrize("difference, sd, n", [(5.0, 11.0, 20), (19.0, 15.0, 5), (1.0, 3.0, 2), (2.0, 4.0, 40)])
def test_power_is_the_noncentral_t_tail(difference, sd, n):
    df = n - 1
    critical = stats.t.ppf(0.975, df)
    noncentrality = difference / (sd / math.sqrt(n))
    reference = stats.nct.sf(critical, df, noncentrality) + stats.nct.cdf(-critical, df, noncentrality)
    assert paired_t_power(difference, sd, n) == pytest.approx(reference, rel=1e-7)


def test_minimum_detectable_difference_and_seeds_needed():
    # REFERENCE.md's rule of thumb 2.8 sd / sqrt(n) for n >= 10 (80 % power, two-sided 0.05): at n = 20, 0.66 sd
    mdd = minimum_detectable_difference(1.0, 20)
    assert paired_t_power(mdd, 1.0, 20) == pytest.approx(0.8, abs=1e-9)
    assert 2.8 / math.sqrt(20) < mdd < 3.0 / math.sqrt(20)
    # the committed studies' paired sd of 11-19 points at 5 seeds: ~19-32 points, the issue's figures
    assert 18.0 < minimum_detectable_difference(11.0, 5) < 20.0
    needed = pairs_needed(5.0, 7.0)
    assert paired_t_power(5.0, 7.0, needed) >= 0.8 > paired_t_power(5.0, 7.0, needed - 1)


@pytest.mark.parametrize("treatment, control, message", [
    ([1.0], [2.0], "at least 2 pairs"),
    ([], [], "at least 2 pairs"),
    ([1.0, 2.0], [1.0], "equal lengths"),
    ([1.0, math.nan], [1.0, 2.0], "finite"),
])
def test_bad_input_is_a_clear_error(treatment, control, message):
    with pytest.raises(ValueError, match=message):
        paired_comparison(treatment, control)


def test_identical_differences_up_to_float_rounding_are_degenerate():
    # every seed one 0.1-point step up, the subtraction's rounding differing in the last bits: the same case as
    # exactly identical differences (undefined t-test), not a p of 1e-29
    noisy = paired_comparison([0.3, 10.3, 20.3], [0.2, 10.2, 20.2])
    assert len(set(noisy["differences"])) > 1
    assert noisy["degenerate"] and not noisy["significant"] and math.isnan(noisy["p"])
    zero = paired_comparison([0.1 + 0.2, 1.0], [0.3, 1.0])  # 0.30000000000000004 - 0.3: no difference at all
    assert zero["degenerate"] and zero["p"] == 1.0
