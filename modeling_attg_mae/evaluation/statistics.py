"""Paired comparison of two arms over seeds: the Student-t test and interval the method study reports, the exact
Wilcoxon signed-rank p beside it, Holm's correction across hypotheses, and the power of the paired t-test (the seed
count a protocol fixes before its runs).

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

    All differences identical (sd 0, where scipy returns nan): the t-test is undefined. When they are all 0, p = 1
    and t = 0. When they are all the same non-zero value (a coarse metric: every seed moves by one test image), p and
    t are nan and `significant` is False, since a p of 0 would read as a bar met on what may be one quantisation
    step; `degenerate` says so, and the Wilcoxon p (`wilcoxon_p`, `wilcoxon_signed_rank`) stays defined. The
    interval is the single point mean(d).

    `wilcoxon_p`: the two-sided exact signed-rank p of the same differences (`wilcoxon_signed_rank`), reported
    beside the t-test as the protocols ask.

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
    # identical up to the rounding of the subtraction: percentages such as 70.39999999999999 - 70.3 and
    # 56.3 - 56.2 are one 0.1-point step each, but differ in the last bits; compared exactly, their sd of ~1e-15
    # gave p ~ 1e-29 ("met") where the same step without the noise is undefined
    tolerance = 1e-9 * max(1.0, max(abs(v) for v in treatment + control))
    degenerate = all(abs(d - differences[0]) <= tolerance for d in differences)
    if degenerate:
        t, p = (0.0, 1.0) if abs(diff_mean) <= tolerance else (math.nan, math.nan)
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
        "zero": sum(d == 0 for d in differences), "alpha": alpha, "significant": bool(p < alpha),
        "degenerate": degenerate, "wilcoxon_p": wilcoxon_signed_rank(differences)["p"],
    }


def wilcoxon_signed_rank(differences: Sequence[float]) -> dict:
    """Two-sided Wilcoxon signed-rank test of paired differences against 0, exact.

    Zero differences are dropped (Wilcoxon's rule, scipy's `zero_method="wilcox"`); the others are ranked by |d|
    with average ranks for ties. W+ is the sum of the positive differences' ranks; under the null every sign is a
    fair coin, so the exact distribution of W+ is counted over all 2^m sign patterns (m non-zero differences) by
    dynamic programming on the doubled ranks (integers even with ties). p = min(1, 2 min(P(W+ >= w), P(W+ <= w))).
    Without ties and zeros this is scipy's exact `wilcoxon(d)`; with them, scipy's deterministic permutation test
    (n <= 13), and still exact above that, where scipy falls back to the normal approximation.

    The smallest p reachable is 2 / 2^m: 0.0625 at 5 seeds, below 0.05 only from 6 non-zero differences.
    Returns `n` (non-zero differences), `w_plus`, `w_minus`, `p`; p = 1 when every difference is 0.
    """
    values = [float(d) for d in differences]
    if not all(math.isfinite(d) for d in values):
        raise ValueError("paired differences must be finite numbers")
    nonzero = sorted((d for d in values if d != 0.0), key=abs)
    m = len(nonzero)
    if m == 0:
        return {"n": 0, "w_plus": 0.0, "w_minus": 0.0, "p": 1.0}
    doubled = [0] * m  # 2 x the average rank of each |d| (ranks 1..m; ties share their mean)
    start = 0
    while start < m:
        end = start
        while end + 1 < m and abs(nonzero[end + 1]) == abs(nonzero[start]):
            end += 1
        for i in range(start, end + 1):
            doubled[i] = start + end + 2  # (start + 1) + (end + 1)
        start = end + 1
    counts = {0: 1}  # ways to reach each doubled W+ over the sign patterns seen so far
    for rank in doubled:
        grown = dict(counts)
        for total, ways in counts.items():
            grown[total + rank] = grown.get(total + rank, 0) + ways
        counts = grown
    observed = sum(rank for rank, d in zip(doubled, nonzero) if d > 0)
    patterns = 2 ** m
    upper = sum(ways for total, ways in counts.items() if total >= observed) / patterns
    lower = sum(ways for total, ways in counts.items() if total <= observed) / patterns
    return {"n": m, "w_plus": observed / 2, "w_minus": (sum(doubled) - observed) / 2,
            "p": min(1.0, 2.0 * min(upper, lower))}


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: with the p sorted ascending p_(1) <= ... <= p_(m),
    adjusted p_(i) = max over j <= i of min(1, (m - j + 1) p_(j)). Rejecting where the adjusted p < alpha controls
    the family-wise error at alpha across the m hypotheses. A nan p (an undefined test) stays nan and counts in m.
    """
    values = [float(p) for p in p_values]
    if any(not (math.isnan(p) or 0.0 <= p <= 1.0) for p in values):
        raise ValueError(f"p-values must lie in [0, 1] (or be nan), got {values}")
    m = len(values)
    order = sorted((i for i in range(m) if not math.isnan(values[i])), key=lambda i: values[i])
    adjusted = [math.nan] * m
    running = 0.0
    for position, i in enumerate(order):
        running = max(running, min(1.0, (m - position) * values[i]))
        adjusted[i] = running
    return adjusted


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def paired_t_power(difference: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at level `alpha` with `n` pairs to detect a true mean difference
    `difference` when the per-pair differences have standard deviation `sd`: P(|T'| > t_{1-alpha/2, n-1}) with T'
    noncentral t (df = n - 1, noncentrality difference / (sd / sqrt(n))).

    T' = (Z + delta) / S with S = sqrt(V / df), V chi-square(df), so P(T' > c) = E[Phi(delta - c S)]; the
    expectation is integrated over S's density with Simpson's rule (4096 panels on [0, 1 + 12 / sqrt(df)] plus a
    margin, where the density has ~all its mass). Agrees with scipy's `nct` to ~1e-9 (tests/test_statistics.py).
    """
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 pairs, got {n}")
    if not sd > 0:
        raise ValueError(f"sd must be > 0, got {sd}")
    df = n - 1
    critical = student_t_quantile(1.0 - alpha / 2.0, df)
    delta = abs(difference) / (sd / math.sqrt(n))
    # density of S = sqrt(chi2_df / df): 2 (df/2)^(df/2) / Gamma(df/2) s^(df-1) exp(-df s^2 / 2)
    log_front = math.log(2.0) + (df / 2.0) * math.log(df / 2.0) - math.lgamma(df / 2.0)
    top = 2.0 + 12.0 / math.sqrt(df)
    panels = 4096
    h = top / panels
    total = 0.0
    for k in range(panels + 1):
        s = k * h
        if s == 0.0:
            continue  # the density is 0 there (df >= 1: s^(df-1) exp(..) -> 0, or finite for df = 1 times 0 width)
        density = math.exp(log_front + (df - 1) * math.log(s) - df * s * s / 2.0)
        tails = _normal_cdf(delta - critical * s) + _normal_cdf(-delta - critical * s)
        weight = 1 if k == panels else (4 if k % 2 else 2)
        total += weight * density * tails
    if df == 1:  # s^0 at s = 0: density 2 (1/2)^(1/2) / Gamma(1/2) = sqrt(2 / pi), tails at s = 0
        total += math.sqrt(2.0 / math.pi) * (_normal_cdf(delta) + _normal_cdf(-delta))
    return min(1.0, total * h / 3.0)


def minimum_detectable_difference(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference the two-sided paired t-test with `n` pairs detects with probability
    `power` at level `alpha`, for per-pair differences of standard deviation `sd` (bisection on `paired_t_power`).
    About 2.8 sd / sqrt(n) for n >= 10 at the defaults; larger for fewer pairs."""
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power}")
    low, high = 0.0, sd
    while paired_t_power(high, sd, n, alpha) < power:
        low, high = high, 2.0 * high
    for _ in range(60):
        middle = 0.5 * (low + high)
        if paired_t_power(middle, sd, n, alpha) < power:
            low = middle
        else:
            high = middle
    return high


def pairs_needed(difference: float, sd: float, alpha: float = 0.05, power: float = 0.8, most: int = 1000) -> int:
    """The fewest pairs (seeds) with which the two-sided paired t-test detects `difference` with `power`."""
    if not difference > 0:
        raise ValueError(f"difference must be > 0, got {difference}")
    for n in range(2, most + 1):
        if paired_t_power(difference, sd, n, alpha) >= power:
            return n
    raise ValueError(f"{difference} is not detectable with power {power} within {most} pairs at sd {sd}")
