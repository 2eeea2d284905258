"""The AttG vs MAE study report of docs/RESULTS.md (issue 10), from the study's per-run records.

Reads every record `<records>/<setting>/seed<S>-<arm>.json` (one pre-training run through `run_pretrain.py` and
its evaluation; schema_version 1), pairs the arms of a setting by seed, compares each arm with vanilla MAE
(`attg_guidance="none"`) by a paired t-test over seeds (`paired_comparison`), and renders per setting: the primary
metric per seed, a summary table per metric and split with the verdict on the bar, the object-loss share of the
last epoch, and two plots (online k-NN curves, object-loss share over steps).

    python benchmarks/study_report.py                    # print the markdown, change nothing on disk
    python benchmarks/study_report.py --write            # draw the plots, replace the block in docs/RESULTS.md
    python benchmarks/study_report.py --records DIR --results-md PATH --write

A setting folder holding a `protocol.json` is reported under that protocol instead (`protocol_report.py`:
training-free baseline rows, "cannot decide", Holm over the hypotheses, Wilcoxon beside the t-test, no verdict before
the protocol's seed count); a setting named `<name>_pilot` is shown without bars or verdicts.

The block goes between the markers `<!-- study:begin -->` and `<!-- study:end -->`; nothing else is touched.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plotting import plot_curves  # noqa: E402
from protocol_report import BASELINES, BASELINE_NAMES, baseline_values, load_protocol, render_protocol_setting  # noqa: E402

from modeling_attg_mae.evaluation.statistics import mean_and_sd, paired_comparison  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDS_DIR = os.path.join(REPO, "docs", "results", "attg_vs_mae")
RESULTS_MD = os.path.join(REPO, "docs", "RESULTS.md")
BEGIN, END = "<!-- study:begin -->", "<!-- study:end -->"
SCHEMA_VERSION = 1
CONTROL_ARM = "none"
PILOT_SUFFIX = "_pilot"  # a setting named <name>_pilot is rendered without bars or verdicts  # vanilla MAE; every other arm of a setting is compared with it
SPLITS = ("validation", "validation_mixed_rand", "validation_only_fg")
METRICS = (("knn", "cls"), ("knn", "mean"), ("linear", "cls"))  # (evaluation, pooling); "linear" may be absent

# The primary metric and the bar, fixed before the runs of issue 10: the report applies them, never picks them.
# A treatment meets the bar on a split when the two-sided paired t-test over seeds gives p < ALPHA *and* the
# mean difference is positive (a significantly worse arm does not "meet" a bar that asks whether it is better);
# it meets the bar overall when it does so on every split of BAR_SPLITS.
PRIMARY = ("knn", "cls")  # k-NN top-1 (k = 20, DINO's weighted vote) on CLS features
BAR_SPLITS = ("validation", "validation_mixed_rand")
ALPHA = 0.05

ARM_NAMES = {"none": "MAE", "attg": "AttG", "self": "AttG, self maps", "online_sr": "AttG, online spectral residual",
             "sr": "AttG, stored spectral residual", "permuted": "AttG, permuted maps (placebo)",
             "centre": "AttG, centre prior (placebo)", "input_masking": "AttG masking"}
ARM_COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75)]
METRIC_NAMES = {"knn": "k-NN", "linear": "linear"}


def arm_name(arm: str) -> str:
    return ARM_NAMES.get(arm, arm)


def metric_name(metric: tuple[str, str]) -> str:
    return f"{METRIC_NAMES[metric[0]]} {metric[1]}"


def format_p(p: float) -> str:
    """The p value as the tables print it (3 significant digits; tests format scipy's p the same way)."""
    return f"{p:.3g}"


def load_records(directory: str) -> dict[str, dict[str, dict[int, dict]]]:
    """`{setting: {arm: {seed: record}}}` from `directory/<setting>/seed<S>-<arm>.json`.

    The folder and file name must agree with the record's own `setting`, `seed` and `arm`: a record copied to
    the wrong place would otherwise be paired with the wrong run.
    """
    paths = sorted(glob.glob(os.path.join(directory, "*", "seed*-*.json")))
    if not paths:
        raise FileNotFoundError(f"no study records (<setting>/seed<S>-<arm>.json) under {directory}")
    settings: dict[str, dict[str, dict[int, dict]]] = {}
    for path in paths:
        with open(path) as f:
            record = json.load(f)
        if record.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"{path}: schema_version {record.get('schema_version')!r}, expected {SCHEMA_VERSION}")
        setting, seed, arm = record["setting"], int(record["seed"]), record["arm"]
        expected = os.path.join(directory, setting, f"seed{seed}-{arm}.json")
        if os.path.normpath(path) != os.path.normpath(expected):
            raise ValueError(f"{path} holds setting={setting!r} seed={seed} arm={arm!r}; it belongs at {expected}")
        settings.setdefault(setting, {}).setdefault(arm, {})[seed] = record
    return settings


def paired_seeds(setting: str, arms: dict[str, dict[int, dict]]) -> list[int]:
    """The seeds of a setting, checked to be the same in every arm, each seed on one data set in every arm."""
    if CONTROL_ARM not in arms:
        raise ValueError(f"setting {setting!r}: no {CONTROL_ARM!r} (MAE) records to compare with")
    if len(arms) < 2:
        raise ValueError(f"setting {setting!r}: only MAE records, nothing to compare")
    seeds = sorted(set().union(*arms.values()))
    for arm, runs in sorted(arms.items()):
        missing = sorted(set(seeds) - set(runs))
        if missing:
            raise ValueError(f"setting {setting!r}: arm {arm!r} has no record for seed(s) {missing}; "
                             "a paired comparison needs every seed in every arm")
    for seed in seeds:
        data_seeds = {arm: runs[seed]["data_seed"] for arm, runs in arms.items()}
        if len(set(data_seeds.values())) > 1:
            raise ValueError(f"setting {setting!r} seed {seed}: arms trained on different data seeds {data_seeds}")
    return seeds


def metric_values(records: list[dict], metric: tuple[str, str], split: str) -> list[float] | None:
    """One value per record, or None when no record has the metric (the linear probe is optional)."""
    evaluation, pooling = metric
    present = [pooling in record.get(evaluation, {}) for record in records]
    if not any(present):
        return None
    if not all(present):
        raise ValueError(f"{evaluation}/{pooling} is in some records of a setting but not in all: cannot pair")
    return [float(record[evaluation][pooling][split]) for record in records]


def bar_met(comparison: dict) -> bool:
    return comparison["p"] < ALPHA and comparison["diff_mean"] > 0


def comparison_row(label: str, split: str, treatment: list[float], control: list[float], primary: bool,
                   pilot: bool = False) -> str:
    """One row of a paired-comparison table: both arms' mean +- sd, the difference's mean +- sd, its t-interval,
    t, p, the signs over seeds, and the verdict on the bar for a primary metric on a split of BAR_SPLITS."""
    c = paired_comparison(treatment, control, ALPHA)
    bar = ("met" if bar_met(c) else "not met") if primary and split in BAR_SPLITS and not pilot else ""
    return (f"| {label} | {split} | {c['control_mean']:.1f} +- {c['control_sd']:.1f} | "
            f"{c['treatment_mean']:.1f} +- {c['treatment_sd']:.1f} | {c['diff_mean']:+.2f} +- {c['diff_sd']:.2f} | "
            f"[{c['ci_low']:+.2f}, {c['ci_high']:+.2f}] | {c['t']:.2f} | {format_p(c['p'])} | "
            f"{c['positive']} / {c['negative']} / {c['zero']} | {bar} |")


def last_epoch_share(record: dict) -> float:
    """Mean object-loss share over the last epoch's logged steps (steps per epoch from the k-NN curve)."""
    shares, curve = record.get("object_loss_share") or [], record.get("curve") or []
    if not shares or not curve or curve[-1]["epoch"] <= 0:
        raise ValueError(f"setting {record['setting']!r} seed {record['seed']} arm {record['arm']!r}: "
                         "the object-loss share needs `object_loss_share` and a `curve` past epoch 0")
    steps_per_epoch = curve[-1]["step"] / curve[-1]["epoch"]
    last = max(entry["step"] for entry in shares)
    window = [entry["value"] for entry in shares if entry["step"] > last - steps_per_epoch]
    return sum(window) / len(window)


def mean_curve(records: list[dict], key: str, x: str, y: str) -> tuple[list[float], list[float], list[float]]:
    """`(x, mean, sd)` over seeds of `record[key]` entries; every seed must have logged the same x values."""
    xs = [[entry[x] for entry in record[key]] for record in records]
    if any(other != xs[0] for other in xs[1:]):
        raise ValueError(f"{key}: the seeds logged different {x} values, so they cannot be averaged point-wise")
    columns = [mean_and_sd([record[key][i][y] for record in records]) for i in range(len(xs[0]))]
    return xs[0], [m for m, _ in columns], [s for _, s in columns]


def plot_paths(setting: str, plot_dir: str) -> tuple[str, str]:
    """Where the k-NN curve and object-share plots of a setting go."""
    return (os.path.join(plot_dir, f"{setting}_knn_curve.png"), os.path.join(plot_dir, f"{setting}_object_share.png"))


def plot_setting(setting: str, arms: dict[str, list[dict]], plot_dir: str) -> None:
    """Draws the k-NN curves (validation solid, mixed_rand dashed) and the object-share curves of one setting."""
    n = len(next(iter(arms.values())))
    knn, share = {}, {}
    for color, (arm, records) in zip(ARM_COLORS, arms.items()):
        for split, dashed in (("validation", False), ("validation_mixed_rand", True)):
            knn[f"{arm_name(arm)} {split.removeprefix('validation_')}"] = (
                *mean_curve(records, "curve", "epoch", split), color, dashed)
        x, mean, sd = mean_curve(records, "object_loss_share", "step", "value")
        share[arm_name(arm)] = (x, [100 * m for m in mean], [100 * s for s in sd], color, False)
    knn_path, share_path = plot_paths(setting, plot_dir)
    plot_curves(knn, knn_path, f"{setting}: online k-NN top-1 (k=20, CLS), mean +- sd of {n} seeds "
                "(dashed: mixed_rand)")
    plot_curves(share, share_path, f"{setting}: share of the masked loss on object patches, mean +- sd of {n} seeds",
                x_label="step", y_label="object share (%)")


def share_and_iou_lines(order: list[str], arms: dict[str, list[dict]]) -> list[str]:
    """The object-loss share of the last epoch per arm, and the maps' IoU with the object masks with the training
    time."""
    lines = []
    lines += ["", ("Share of the masked loss on object patches in the last epoch (AttG: of the weighted loss; MAE: "
                   "of the unweighted one), mean +- sd over seeds:"), "", "| arm | object share (%) |", "|---|---|"]
    for arm in order:
        mean, sd = mean_and_sd([100 * last_epoch_share(record) for record in arms[arm]])
        lines.append(f"| {arm_name(arm)} | {mean:.1f} +- {sd:.1f} |")

    with_iou = [arm for arm in order if all(record.get("map_iou") for record in arms[arm])]
    if with_iou:
        lines += ["", ("IoU of each arm's maps with the object masks (map >= its mean vs cells at least half object), "
                       "mean +- sd over seeds: once for a fixed detector, at each refresh (epoch) for self maps; and "
                       "the training wall-clock (one torch thread, other jobs on the machine):"), "",
                  "| arm | map IoU | training s |", "|---|---|---|"]
        for arm in order:
            if arm in with_iou:
                epochs = sorted({entry["epoch"] for record in arms[arm] for entry in record["map_iou"]})
                cells = []
                for epoch in epochs:
                    ious = [entry["value"] for record in arms[arm] for entry in record["map_iou"] if entry["epoch"] == epoch]
                    mean, sd = mean_and_sd(ious)
                    cells.append(f"{mean:.3f} +- {sd:.3f}" + (f" (epoch {epoch:g})" if len(epochs) > 1 else ""))
                iou = "; ".join(cells)
            else:
                iou = "-"
            seconds = [record["train_seconds"] for record in arms[arm] if record.get("train_seconds") is not None]
            lines.append(f"| {arm_name(arm)} | {iou} | {mean_and_sd(seconds)[0]:.0f} +- {mean_and_sd(seconds)[1]:.0f} |")

    return lines


def baselines_lines(records: list[dict], splits) -> list[str]:
    """The training-free baselines and the random initialisation of a setting without a protocol, mean +- sd."""
    lines = ["", f"Training-free baselines (k-NN top-1 %, k = {records[0]['knn_k']}, mean +- sd over "
                 f"{len(records)} seeds; no training):", "", "| features | " + " | ".join(splits) + " |",
             "|---|" + "---|" * len(splits)]
    values = {split: baseline_values(records, split) for split in splits}
    for name in values[splits[0]]:
        cells = [mean_and_sd(values[split][name]) if len(records) > 1 else (values[split][name][0], float("nan"))
                 for split in splits]
        lines.append(f"| {BASELINE_NAMES.get(name, name)} | " + " | ".join(f"{m:.1f} +- {sd:.1f}" for m, sd in cells)
                     + " |")
    return lines


def render_setting(setting: str, arms_by_seed: dict[str, dict[int, dict]], plot_dir: str, link_dir: str,
                   draw: bool) -> str:
    arms_by_seed = dict(arms_by_seed)
    baselines = arms_by_seed.pop(BASELINES, None)
    seeds = paired_seeds(setting, arms_by_seed)
    # MAE first, then the other arms in name order, each as a list in seed order: index i is seed seeds[i]
    order = [CONTROL_ARM] + sorted(arm for arm in arms_by_seed if arm != CONTROL_ARM)
    arms = {arm: [arms_by_seed[arm][seed] for seed in seeds] for arm in order}
    treatments = order[1:]
    pilot = setting.endswith(PILOT_SUFFIX)
    lines = [f"### Setting `{setting}` ({len(seeds)} seeds: {', '.join(map(str, seeds))})", ""]
    if pilot:  # it chose the setting and sized the study: its numbers are shown, no bar is read on them
        lines += ["A pilot: descriptive only, no bar and no verdict (its seeds are not the study's).", ""]

    for arm in ([] if pilot else treatments):
        comparisons = {split: paired_comparison(metric_values(arms[arm], PRIMARY, split),
                                                metric_values(arms[CONTROL_ARM], PRIMARY, split), ALPHA)
                       for split in BAR_SPLITS}
        per_split = "; ".join(f"{split}: {'met' if bar_met(c) else 'not met'} "
                              f"({c['diff_mean']:+.2f} points, p = {format_p(c['p'])})"
                              for split, c in comparisons.items())
        verdict = "met" if all(bar_met(c) for c in comparisons.values()) else "not met"
        lines.append(f"**Bar for {arm_name(arm)} vs MAE: {verdict}** ({per_split}).")
    lines += ["", f"Per seed, primary metric: {metric_name(PRIMARY)} top-1 (%), k = 20.", ""]
    header = ["seed"]
    for split in SPLITS:
        header += [f"{arm_name(arm)} {split}" for arm in order]
        header += [f"{arm_name(arm)} - MAE" for arm in treatments]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    values = {(arm, split): metric_values(arms[arm], PRIMARY, split) for arm in order for split in SPLITS}
    for i, seed in enumerate(seeds):
        row = [str(seed)]
        for split in SPLITS:
            row += [f"{values[arm, split][i]:.1f}" for arm in order]
            row += [f"{values[arm, split][i] - values[CONTROL_ARM, split][i]:+.1f}" for arm in treatments]
        lines.append("| " + " | ".join(row) + " |")

    for arm in treatments:
        lines += ["", (f"{arm_name(arm)} vs MAE, paired over the {len(seeds)} seeds (mean +- sample sd; difference "
                       f"{arm_name(arm)} - MAE: mean +- sd over seeds, its {100 * (1 - ALPHA):g} % t-interval, "
                       "two-sided paired t-test; "
                       "signs: seeds with a positive / negative / zero difference):"), "",
                  (f"| metric | split | MAE | {arm_name(arm)} | difference | {100 * (1 - ALPHA):g} % CI | t | p "
                   "| + / - / 0 | bar |"), "|---|---|---|---|---|---|---|---|---|---|"]
        for metric in METRICS:
            for split in SPLITS:
                treatment = metric_values(arms[arm], metric, split)
                if treatment is None:
                    continue
                lines.append(comparison_row(metric_name(metric), split, treatment,
                                            metric_values(arms[CONTROL_ARM], metric, split), metric == PRIMARY,
                                            pilot))

    if baselines is not None:
        lines += baselines_lines([baselines[seed] for seed in seeds if seed in baselines], SPLITS)
    lines += share_and_iou_lines(order, arms)

    if draw:
        plot_setting(setting, arms, plot_dir)
    knn_path, share_path = plot_paths(setting, plot_dir)
    lines += ["", f"![online k-NN top-1 of {setting}]({os.path.relpath(knn_path, link_dir)})",
              f"![object-loss share of {setting}]({os.path.relpath(share_path, link_dir)})"]
    return "\n".join(lines)


def add_reference(settings: dict, reference_dir: str, arm: str) -> list[str]:
    """Add `arm`'s records from `reference_dir` (same settings and seeds, made earlier) to `settings`, for the
    settings whose MAE records reproduce the reference's MAE records exactly (k-NN, linear probe, curve, object
    share): only then are they runs of the same code path on the same machine, and pairing them is sound.
    Returns one line per setting saying what was done."""
    reference = load_records(reference_dir)
    notes = []
    for setting, arms in settings.items():
        if arm not in reference.get(setting, {}) or CONTROL_ARM not in reference[setting]:
            notes.append(f"`{setting}`: no reference {arm_name(arm)} records in {reference_dir}.")
            continue
        fields = ("knn", "linear", "curve", "object_loss_share")
        differ = sorted(seed for seed, record in arms.get(CONTROL_ARM, {}).items()
                        if any(record.get(f) != reference[setting][CONTROL_ARM].get(seed, {}).get(f) for f in fields))
        if differ:
            notes.append(f"`{setting}`: the MAE runs of seed(s) {differ} do not reproduce the reference MAE records, "
                         f"so the reference {arm_name(arm)} records are not paired with this study.")
            continue
        arms[arm] = dict(reference[setting][arm])
        notes.append(f"`{setting}`: every MAE run reproduces the reference MAE record exactly (k-NN, linear probe, "
                     f"online curve, object share), so the reference {arm_name(arm)} records (same machine, seeds "
                     "and settings) are paired with this study's arms.")
    return notes


def render(records_dir: str, results_md: str, draw: bool, reference: tuple[str, str] | None = None,
           command: str = "python benchmarks/study_report.py --write") -> str:
    """The markdown block for every setting under `records_dir`; `draw` also writes the plots next to the records;
    `reference` = (records folder, arm) adds an earlier study's arm, see `add_reference`."""
    settings = load_records(records_dir)
    count = sum(len(runs) for arms in settings.values() for runs in arms.values())
    notes = add_reference(settings, *reference) if reference else []
    borrowed = sum(len(runs) for arms in settings.values() for runs in arms.values()) - count
    link_dir = os.path.dirname(os.path.abspath(results_md))
    head = (f"Generated by `{command}` from the {count} records in "
            f"`{os.path.relpath(records_dir, link_dir)}/`"
            + (f" and {borrowed} paired from `{os.path.relpath(reference[0], link_dir)}/`" if borrowed else "")
            + "; edit the records or the script, not this block.")
    if any(load_protocol(os.path.join(records_dir, setting)) is None for setting in settings):
        head += (f" Settings without a protocol.json: primary metric (fixed before the runs) "
                 f"{metric_name(PRIMARY)} top-1, k = 20; bar: p < {ALPHA:g} (two-sided paired t-test over seeds) "
                 f"with a positive mean difference on each of {' and '.join(BAR_SPLITS)}.")
    blocks = []
    for setting in sorted(settings):
        protocol = load_protocol(os.path.join(records_dir, setting))
        if protocol is None:
            blocks.append(render_setting(setting, settings[setting], os.path.abspath(records_dir), link_dir, draw))
            continue
        # the protocol's text: next to its protocol.json, or for the whole records folder (pilot and study)
        text_path = os.path.join(records_dir, setting, "PROTOCOL.md")
        if not os.path.isfile(text_path) and os.path.isfile(os.path.join(records_dir, "PROTOCOL.md")):
            text_path = os.path.join(records_dir, "PROTOCOL.md")
        link = os.path.relpath(text_path, link_dir)
        text = render_protocol_setting(setting, settings[setting], protocol, arm_name, link)
        arms = {arm: [settings[setting][arm][seed] for seed in sorted(settings[setting][arm])]
                for arm in protocol.get("arms", sorted(a for a in settings[setting] if a != BASELINES))
                if arm in settings[setting]}
        if arms and all(len(runs) == len(next(iter(arms.values()))) for runs in arms.values()):
            text += "\n" + "\n".join(share_and_iou_lines(list(arms), arms))
        blocks.append(text)
    return "\n\n".join([head + (" " + " ".join(notes) if notes else "")] + blocks)


def write_between_markers(path: str, text: str, begin: str = BEGIN, end: str = END) -> None:
    with open(path) as f:
        content = f.read()
    if content.count(begin) != 1 or content.count(end) != 1 or content.index(begin) > content.index(end):
        raise ValueError(f"{path} must hold {begin} once, followed by {end} once")
    before, rest = content.split(begin)
    after = rest.split(end)[1]
    with open(path, "w") as f:
        f.write(f"{before}{begin}\n{text}\n{end}{after}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", default=RECORDS_DIR, help="folder of <setting>/seed<S>-<arm>.json records "
                        "(default: docs/results/attg_vs_mae); the plots are written here too")
    parser.add_argument("--results-md", default=RESULTS_MD, help="the markdown file holding the markers "
                        "(default: docs/RESULTS.md)")
    parser.add_argument("--write", action="store_true", help="draw the plots and replace the block between the "
                        "markers; without it the markdown goes to stdout and nothing is written")
    parser.add_argument("--block", default="study", help="the markers' name: <!-- NAME:begin --> ... "
                        "<!-- NAME:end --> (default: study, the method study's block)")
    parser.add_argument("--reference", nargs=2, metavar=("RECORDS", "ARM"), help="also pair ARM's records from "
                        "RECORDS, when this study's MAE records reproduce RECORDS' exactly (see add_reference)")
    args = parser.parse_args(argv)
    command = "python benchmarks/study_report.py " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:]))
    text = render(args.records, args.results_md, draw=args.write, reference=args.reference,
                  command=command if args.block != "study" else "python benchmarks/study_report.py --write")
    if args.write:
        write_between_markers(args.results_md, text, f"<!-- {args.block}:begin -->", f"<!-- {args.block}:end -->")
    else:
        print(text)


if __name__ == "__main__":
    main()
