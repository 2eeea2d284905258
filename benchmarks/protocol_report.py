"""The report of a study run under a committed protocol (`<records>/<setting>/protocol.json`, issue 25).

The protocol fixes, before the runs: the primary metric, the splits the verdict reads, alpha, the hypotheses
(treatment > control pairs, all corrected together by Holm), the seeds, and the margin by which the better
pre-trained arm must beat every training-free baseline for the setting to be able to decide at all. This module
applies it to the records and never chooses anything itself:

* a split on which a training-free baseline (raw pixels, a colour histogram, the mask alone, the randomly
  initialised encoder) comes within `decide_margin` points of the best arm "cannot decide": its verdicts say so;
* each hypothesis on each split: the paired difference's mean, its 95 % t-interval, the t-test's p, Holm's
  adjusted p over every (hypothesis, split) of the family, and the exact Wilcoxon signed-rank p beside them;
  "met" needs the Holm-adjusted p < alpha and a positive mean difference, on every split of the protocol;
* with fewer seeds than the protocol's, the tables are an interim look and no verdict is given.

`study_report.py` calls `render_protocol_setting` for every setting folder holding a protocol.json.
"""

from __future__ import annotations

import json
import os

from modeling_attg_mae.evaluation.statistics import holm_adjust, mean_and_sd, paired_comparison

PROTOCOL_FILE = "protocol.json"
BASELINES = "baselines"
PROTOCOL_KEYS = ("setting", "primary", "splits", "alpha", "seeds", "hypotheses", "decide_margin", "claims")
BASELINE_NAMES = {"raw_pixels": "raw pixels", "rgb_histogram": "RGB histogram", "hue_histogram": "hue histogram",
                  "mask": "object mask alone", "random_init_cls": "random init, CLS",
                  "random_init_mean": "random init, mean"}


def load_protocol(setting_dir: str) -> dict | None:
    """The setting's protocol, checked for the fields the report reads; None when the setting has none."""
    path = os.path.join(setting_dir, PROTOCOL_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        protocol = json.load(f)
    missing = [key for key in PROTOCOL_KEYS if key not in protocol]
    if missing:
        raise ValueError(f"{path}: the protocol lacks {missing} (it needs {list(PROTOCOL_KEYS)})")
    for hypothesis in protocol["hypotheses"]:
        if set(hypothesis) != {"name", "treatment", "control"}:
            raise ValueError(f"{path}: a hypothesis is {{name, treatment, control}}, got {hypothesis}")
        if hypothesis["treatment"] == hypothesis["control"]:
            raise ValueError(f"{path}: hypothesis {hypothesis['name']!r} compares arm {hypothesis['treatment']!r} "
                             "with itself")
        unknown = [arm for arm in (hypothesis["treatment"], hypothesis["control"])
                   if "arms" in protocol and arm not in protocol["arms"]]
        if unknown:
            raise ValueError(f"{path}: hypothesis {hypothesis['name']!r} names arm(s) {unknown} that the protocol's "
                             f"arms {protocol['arms']} do not hold")
    if len(set(protocol["seeds"])) != len(protocol["seeds"]):
        raise ValueError(f"{path}: the protocol's seeds repeat ({protocol['seeds']}): no record set could complete it")
    names = {h["name"] for h in protocol["hypotheses"]}
    for claim in protocol["claims"]:
        if not claim["needs"]:
            raise ValueError(f"{path}: claim {claim['name']!r} needs no hypothesis (it would be supported vacuously)")
        unknown = set(claim["needs"]) - names
        if unknown:
            raise ValueError(f"{path}: claim {claim['name']!r} needs unknown hypotheses {sorted(unknown)}")
    return protocol


def baseline_values(records: list[dict], split: str) -> dict[str, list[float]]:
    """`{baseline: [value per seed]}` of the baselines records (training-free and random init)."""
    names = sorted(records[0]["training_free"])
    values = {name: [float(r["training_free"][name][split]) for r in records] for name in names}
    for pooling in ("cls", "mean"):
        values[f"random_init_{pooling}"] = [float(r["random_init"]["knn"][pooling][split]) for r in records]
    return values


def _primary(record: dict, primary: dict, split: str) -> float:
    return float(record[primary["evaluation"]][primary["pooling"]][split])


def _cell(values: list[float]) -> str:
    mean, sd = mean_and_sd(values) if len(values) > 1 else (values[0], float("nan"))
    return f"{mean:.1f} +- {sd:.1f}"


def _p(p: float) -> str:
    return "undefined" if p != p else f"{p:.3g}"


def check_protocol_records(setting: str, seeds: list[int], records: dict[str, list[dict]], baselines: list[dict],
                           primary: dict, splits) -> None:
    """Refuse, naming the record, what would otherwise be paired silently or fail with a bare KeyError: arms of
    one seed trained on different data seeds, a record without the primary metric on a split the report reads,
    and baselines records of different baseline sets (the first record's set decided which were compared)."""
    for i, seed in enumerate(seeds):
        data_seeds = {arm: runs[i].get("data_seed") for arm, runs in records.items()}
        data_seeds[BASELINES] = baselines[i].get("data_seed")
        if len(set(data_seeds.values())) > 1:
            raise ValueError(f"setting {setting!r} seed {seed}: the arms were trained on different data seeds "
                             f"{data_seeds}; a paired comparison needs one data set per seed")
    evaluation, pooling = primary["evaluation"], primary["pooling"]
    reads = list(dict.fromkeys([*splits, *records[next(iter(records))][0].get(evaluation, {}).get(pooling, {})]))
    for arm, runs in records.items():
        for seed, record in zip(seeds, runs):
            have = record.get(evaluation, {}).get(pooling)
            if not isinstance(have, dict):
                raise ValueError(f"setting {setting!r} seed {seed} arm {arm!r}: the record has no primary metric "
                                 f"{evaluation}.{pooling} (it has {sorted(record.get(evaluation, {}) or {})})")
            missing = [split for split in reads if split not in have]
            if missing:
                raise ValueError(f"setting {setting!r} seed {seed} arm {arm!r}: no {evaluation}.{pooling} value for "
                                 f"split(s) {missing} (it has {sorted(have)})")
    names = sorted(baselines[0]["training_free"])
    for seed, record in zip(seeds, baselines):
        if "knn_k" in record and record["knn_k"] != primary.get("k", 20):
            raise ValueError(f"setting {setting!r} seed {seed}: the baselines were measured with k = "
                             f"{record['knn_k']}, the protocol's primary metric is k = {primary.get('k', 20)}")
        if sorted(record["training_free"]) != names:
            raise ValueError(f"setting {setting!r} seed {seed}: the baselines record holds the training-free "
                             f"baselines {sorted(record['training_free'])}, seed {seeds[0]}'s {names}; every seed "
                             "needs the same ones")
        for name, values in [*record["training_free"].items(), *(
                (f"random_init_{p}", record["random_init"]["knn"].get(p, {})) for p in ("cls", "mean"))]:
            missing = [split for split in reads if split not in values]
            if missing:
                raise ValueError(f"setting {setting!r} seed {seed}: baseline {name!r} has no value for split(s) "
                                 f"{missing}")


def render_protocol_setting(setting: str, arms_by_seed: dict[str, dict[int, dict]], protocol: dict,
                            arm_name, protocol_link: str) -> str:
    """The markdown block of a setting under its protocol (see the module docstring)."""
    primary, splits, alpha = protocol["primary"], protocol["splits"], float(protocol["alpha"])
    arms = [arm for arm in protocol["arms"] if arm != BASELINES] if "arms" in protocol else sorted(
        arm for arm in arms_by_seed if arm != BASELINES)
    # an arm a hypothesis names is needed even where the protocol lists no arms (else a KeyError at its test)
    arms += [arm for h in protocol["hypotheses"] for arm in (h["treatment"], h["control"]) if arm not in arms]
    missing_arms = [arm for arm in arms + [BASELINES] if arm not in arms_by_seed]
    if missing_arms:
        return (f"### Setting `{setting}`\n\nNo records yet for {', '.join(missing_arms)} "
                f"(protocol: [{os.path.basename(protocol_link)}]({protocol_link})).")
    seeds = sorted(set.intersection(*(set(arms_by_seed[arm]) for arm in arms + [BASELINES])))
    planned = list(protocol["seeds"])
    unplanned = sorted(set(seeds) - set(planned))
    if unplanned:
        raise ValueError(f"setting {setting!r}: records for seeds {unplanned} that the protocol does not name")
    complete = seeds == sorted(planned)
    lines = [f"### Setting `{setting}` ({len(seeds)} of the protocol's {len(planned)} seeds)", "",
             f"Protocol (fixed before the runs): [{os.path.basename(protocol_link)}]({protocol_link}). Primary "
             f"metric: {primary['evaluation']} {primary['pooling']} top-1 (k = {primary.get('k', 20)}); verdicts on "
             f"{' and '.join(splits)}; alpha {alpha:g}, Holm-corrected over the {len(protocol['hypotheses'])} "
             f"hypotheses x {len(splits)} splits; a split can decide only if the best arm's mean beats every "
             f"training-free baseline's by at least {protocol['decide_margin']:g} points."]
    if not complete:
        lines += ["", f"**Interim: {len(seeds)} of {len(planned)} seeds have every record, so no verdict is given** "
                      "(the protocol reads the verdicts at its seed count only)."]
    if len(seeds) < 2:
        return "\n".join(lines)
    baselines = [arms_by_seed[BASELINES][seed] for seed in seeds]
    records = {arm: [arms_by_seed[arm][seed] for seed in seeds] for arm in arms}
    check_protocol_records(setting, seeds, records, baselines, primary, splits)
    all_splits = list(dict.fromkeys(list(splits) + list(records[arms[0]][0][primary["evaluation"]]
                                                         [primary["pooling"]])))

    # what the training-free baselines reach, beside the arms
    lines += ["", f"{primary['evaluation']} {primary['pooling']} top-1 (%), mean +- sd over {len(seeds)} seeds: "
                  "training-free baselines (same k-NN, the train split as the bank) and the arms:", "",
              "| features | " + " | ".join(all_splits) + " |", "|---|" + "---|" * len(all_splits)]
    per_split_baselines = {split: baseline_values(baselines, split) for split in all_splits}
    for name in per_split_baselines[all_splits[0]]:
        lines.append(f"| {BASELINE_NAMES.get(name, name)} (no training) | "
                     + " | ".join(_cell(per_split_baselines[split][name]) for split in all_splits) + " |")
    for arm in arms:
        lines.append(f"| {arm_name(arm)} | " + " | ".join(
            _cell([_primary(r, primary, split) for r in records[arm]]) for split in all_splits) + " |")

    decides = {}
    lines += ["", "Can the setting decide? (best arm's mean against the best baseline's, per split):", "",
              "| split | best arm | best baseline | margin | decides |", "|---|---|---|---|---|"]
    for split in splits:
        arm_means = {arm: mean_and_sd([_primary(r, primary, split) for r in records[arm]])[0] for arm in arms}
        base_means = {name: mean_and_sd(v)[0] for name, v in per_split_baselines[split].items()}
        best_arm, best_base = max(arm_means, key=arm_means.get), max(base_means, key=base_means.get)
        margin = arm_means[best_arm] - base_means[best_base]
        decides[split] = margin >= float(protocol["decide_margin"])
        lines.append(f"| {split} | {arm_name(best_arm)} {arm_means[best_arm]:.1f} | "
                     f"{BASELINE_NAMES.get(best_base, best_base)} {base_means[best_base]:.1f} | {margin:+.1f} | "
                     f"{'yes' if decides[split] else 'cannot decide'} |")

    tests = []
    for hypothesis in protocol["hypotheses"]:
        for split in splits:
            treatment = [_primary(r, primary, split) for r in records[hypothesis["treatment"]]]
            control = [_primary(r, primary, split) for r in records[hypothesis["control"]]]
            tests.append((hypothesis, split, paired_comparison(treatment, control, alpha)))
    # an undefined test (identical non-zero differences) counts in the family and is never a rejection
    adjusted = holm_adjust([c["p"] for _, _, c in tests])
    lines += ["", (f"Hypotheses (treatment > control), paired over the {len(seeds)} seeds: the difference's mean +- "
                   f"sd, its {100 * (1 - alpha):g} % t-interval, the two-sided t-test p, Holm's adjusted p over the "
                   "family, the exact Wilcoxon signed-rank p, the signs over seeds (+ / - / 0):"), "",
              "| hypothesis | split | treatment | control | difference | 95 % CI | p | Holm p | Wilcoxon p | "
              "+ / - / 0 | on this split |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    outcome = {}
    for (hypothesis, split, c), holm in zip(tests, adjusted):
        significant = holm == holm and holm < alpha and c["diff_mean"] > 0
        if not decides[split]:
            word = "cannot decide"
        elif not complete:
            word = "interim"
        else:
            word = "met" if significant else "not significant"
        outcome.setdefault(hypothesis["name"], []).append(word)
        lines.append(
            f"| {hypothesis['name']}: {arm_name(hypothesis['treatment'])} > {arm_name(hypothesis['control'])} | "
            f"{split} | {c['treatment_mean']:.1f} | {c['control_mean']:.1f} | {c['diff_mean']:+.2f} +- "
            f"{c['diff_sd']:.2f} | [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}] | {_p(c['p'])} | {_p(holm)} | "
            f"{_p(c['wilcoxon_p'])} | {c['positive']} / {c['negative']} / {c['zero']} | {word} |")

    def verdict(words: list[str]) -> str:
        if "cannot decide" in words:
            return "cannot decide"
        if "interim" in words:
            return "interim, no verdict"
        return "met" if all(word == "met" for word in words) else "not significant"

    lines += [""]
    for hypothesis in protocol["hypotheses"]:
        lines.append(f"- **{hypothesis['name']}** ({arm_name(hypothesis['treatment'])} > "
                     f"{arm_name(hypothesis['control'])}): **{verdict(outcome[hypothesis['name']])}**")
    for claim in protocol["claims"]:
        words = [verdict(outcome[name]) for name in claim["needs"]]
        result = ("cannot decide" if "cannot decide" in words else "interim, no verdict" if "interim, no verdict"
                  in words else "supported" if all(w == "met" for w in words) else "not supported")
        lines.append(f"- Claim \"{claim['name']}\" (needs {', '.join(claim['needs'])}): **{result}**")
    return "\n".join(lines)


__all__ = ["BASELINES", "PROTOCOL_FILE", "baseline_values", "load_protocol", "render_protocol_setting"]
