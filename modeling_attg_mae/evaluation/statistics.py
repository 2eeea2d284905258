"""Paired comparison of two arms over seeds: the Student-t test and interval the method study reports.

Pure Python on purpose: scipy is only a testing extra of the package, and the report must not need it. The
Student-t tail comes from the regularized incomplete beta function,

    P(|T| > t) = I_x(df / 2, 1 / 2),   x = df / (df + t^2),

evaluated with the continued fraction of Numerical Recipes (`betai` / `betacf`, modified Lentz). The quantile
(for the confidence interval) inverts the tail by bisection on t. `tests/test_statistics.py` checks both against
scipy to 1e-8 relative.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

# relative change at which the continued fraction has converged: a few ulps, since an exact 1.0 is not guaranteed
_EPS = 4 * sys.float_info.epsilon
_TINY = 1e-300  # Lentz's guard against a zero denominator
_MAX_TERMS = 10_000  # far above the few hundred the fraction needs for df up to 1e6


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (Numerical Recipes `betacf`); converges fast for x < (a+1)/(a+b+2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_TERMS + 1):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),  # the even step
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):  # the odd step
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def _regularized_beta(a: float, b: float, x: float, y: float) -> float:
    """I_x(a, b) with y = 1 - x passed in separately, so that x close to 1 keeps its precision (no 1 - x)."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y))
    # the fraction converges fast only on one side of the mode; on the other use I_x(a, b) = 1 - I_y(b, a)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, y) / b


def student_t_two_sided_p(t: float, df: float) -> float:
    """P(|T| > |t|) for Student's t with `df` degrees of freedom (df > 0; t = +-inf gives 0)."""
    if not df > 0:
        raise ValueError(f"df must be > 0, got {df}")
    if math.isinf(t):
        return 0.0
    t2 = t * t
    return _regularized_beta(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2))


def student_t_quantile(q: float, df: float) -> float:
    """The t with P(T <= t) = q (0 < q < 1), Student's t with `df` degrees of freedom: scipy's `t.ppf(q, df)`."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}")
    if q == 0.5:
        return 0.0
    tail = min(q, 1.0 - q)  # the one-sided tail P(T > t) that |t| must leave; the sign comes from q
    target = 2.0 * tail  # as a two-sided p
    low, high = 0.0, 1.0
    while student_t_two_sided_p(high, df) > target:  # the p falls as t grows: widen until the root is bracketed
        low, high = high, 2.0 * high
    # bisection to the last representable midpoint: slow-ish (~60 halvings), but no derivative to get wrong
    while True:
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if student_t_two_sided_p(middle, df) > target:
            low = middle
        else:
            high = middle
    return high if q > 0.5 else -high


def mean_and_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1), two-pass (as numpy / scipy) for the same rounding."""
    if len(values) < 2:
        raise ValueError(f"a sample standard deviation needs at least 2 values, got {len(values)}")
    mean = math.fsum(values) / len(values)
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def paired_comparison(treatment: Sequence[float], control: Sequence[float], alpha: float = 0.05) -> dict:
    """Paired Student-t comparison of `treatment` against `control`; element i of both is the same unit (seed).

    The unit of analysis is the per-seed difference d_i = treatment_i - control_i (n of them, df = n - 1):
    t = mean(d) / (sd(d) / sqrt(n)), the two-sided p of t, and the (1 - alpha) t-interval of the mean difference
    mean(d) +- t_{1 - alpha/2, n-1} * sd(d) / sqrt(n). Same t and p as `scipy.stats.ttest_rel(treatment, control)`.

    Returns a JSON-able dict: `n`, `treatment_mean`, `treatment_sd`, `control_mean`, `control_sd` (sample sd,
    ddof = 1), `differences`, `diff_mean`, `diff_sd`, `confidence` (1 - alpha), `ci_low`, `ci_high`, `t`, `df`,
    `p` (two-sided), `positive` / `negative` / `zero` (how many differences have that sign), `alpha`,
    `significant` (p < alpha).

    All differences identical (sd 0, where scipy returns nan): the data leave no doubt about the mean, so
    p = 0 and t = +-inf when it is not 0, p = 1 and t = 0 when it is; the interval is the single point mean(d).

    Raises ValueError for fewer than 2 pairs (no sd), unequal lengths, non-finite values or alpha outside (0, 1).
    """
    treatment, control = [float(v) for v in treatment], [float(v) for v in control]
    if len(treatment) != len(control):
        raise ValueError(f"paired samples need equal lengths, got {len(treatment)} treatment and "
                         f"{len(control)} control")
    n = len(treatment)
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 pairs (the sd of 1 difference is undefined), got {n}")
    if not all(math.isfinite(v) for v in treatment + control):
        raise ValueError("paired samples must be finite numbers")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    differences = [a - b for a, b in zip(treatment, control)]
    diff_mean, diff_sd = mean_and_sd(differences)
    df = n - 1
    if all(d == differences[0] for d in differences):
        t = math.copysign(math.inf, diff_mean) if diff_mean != 0 else 0.0
        p = 0.0 if diff_mean != 0 else 1.0
        ci_low = ci_high = diff_mean
    else:
        standard_error = diff_sd / math.sqrt(n)
        t = diff_mean / standard_error
        p = student_t_two_sided_p(t, df)
        half_width = student_t_quantile(1.0 - alpha / 2.0, df) * standard_error
        ci_low, ci_high = diff_mean - half_width, diff_mean + half_width
    treatment_mean, treatment_sd = mean_and_sd(treatment)
    control_mean, control_sd = mean_and_sd(control)
    return {
        "n": n, "treatment_mean": treatment_mean, "treatment_sd": treatment_sd,
        "control_mean": control_mean, "control_sd": control_sd,
        "differences": differences, "diff_mean": diff_mean, "diff_sd": diff_sd,
        "confidence": 1.0 - alpha, "ci_low": ci_low, "ci_high": ci_high, "t": t, "df": df, "p": p,
        "positive": sum(d > 0 for d in differences), "negative": sum(d < 0 for d in differences),
        "zero": sum(d == 0 for d in differences), "alpha": alpha, "significant": p < alpha,
    }
