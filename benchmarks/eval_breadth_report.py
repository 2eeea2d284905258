"""The retrieval / attentive-probe / feature-space report of docs/RESULTS.md (issue 14), from its per-run records.

Reads every record `<records>/<setting>/seed<S>-<arm>.json` written by `benchmarks/eval_breadth.py` (one exported
checkpoint of the method study, evaluated by `run_retrieval` and `run_linear_probe --head attentive`; schema
version 1), pairs MAE and AttG by seed and compares them with the same paired t-test as the method study
(`paired_comparison`). The primary metrics and the bar are the ones of docs/results/eval_breadth/PROTOCOL.md,
committed before the first record.

    python benchmarks/eval_breadth_report.py             # print the markdown, change nothing on disk
    python benchmarks/eval_breadth_report.py --write     # replace the block in docs/RESULTS.md

The block goes between `<!-- eval_breadth:begin -->` and `<!-- eval_breadth:end -->`; nothing else is touched.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_breadth import PICTURE_SEED  # noqa: E402  (whose pair the picture shows)
from study_report import (  # noqa: E402  (one home for the record loading, pairing and formatting rules)
    ALPHA,
    BAR_SPLITS,
    CONTROL_ARM,
    SPLITS,
    arm_name,
    bar_met,
    comparison_row,
    format_p,
    load_records,
    paired_seeds,
    write_between_markers,
)

from modeling_attg_mae.evaluation.statistics import mean_and_sd, paired_comparison  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDS_DIR = os.path.join(REPO, "docs", "results", "eval_breadth")
RESULTS_MD = os.path.join(REPO, "docs", "RESULTS.md")
BEGIN, END = "<!-- eval_breadth:begin -->", "<!-- eval_breadth:end -->"

# Fixed before the runs (PROTOCOL.md): each primary metric has its own bar, p < ALPHA with a positive mean
# difference on every split of BAR_SPLITS; no multiple-comparison correction (said in the block).
PRIMARY = (("retrieval", "mAP"), ("attentive", "top1"))
SECONDARY = (("retrieval", "mP@1"), ("retrieval", "mP@5"), ("retrieval", "mP@10"), ("knn", "top1"))
NAMES = {("retrieval", "mAP"): "retrieval mAP (CLS)", ("attentive", "top1"): "attentive probe top-1",
         ("retrieval", "mP@1"): "retrieval mP@1", ("retrieval", "mP@5"): "retrieval mP@5",
         ("retrieval", "mP@10"): "retrieval mP@10", ("linear", "top1"): "linear probe top-1",
         ("knn", "top1"): "k-NN top-1 (CLS, k = 20; the method study's primary metric on these checkpoints)"}


def values(records: list[dict], metric: tuple[str, str], split: str) -> list[float]:
    evaluation, name = metric
    out = []
    for record in records:
        try:
            entry = record[evaluation][split]
            out.append(float(entry[name] if isinstance(entry, dict) else entry))
        except KeyError:
            raise ValueError(f"seed {record['seed']} arm {record['arm']!r}: no {evaluation} {name} on {split!r}") from None
    return out


def render_setting(setting: str, arms_by_seed: dict[str, dict[int, dict]], link_dir: str, records_dir: str) -> str:
    seeds = paired_seeds(setting, arms_by_seed)
    treatments = sorted(arm for arm in arms_by_seed if arm != CONTROL_ARM)
    arms = {arm: [arms_by_seed[arm][seed] for seed in seeds] for arm in [CONTROL_ARM, *treatments]}
    lines = [f"### Setting `{setting}` ({len(seeds)} seeds: {', '.join(map(str, seeds))})", ""]
    reproduced = [r for runs in arms.values() for r in runs if r.get("checkpoint_reproduces_study_record")]
    total = sum(len(runs) for runs in arms.values())
    lines += [f"Checkpoints regenerated on the current code: {len(reproduced)} of {total} reproduce their committed "
              "method-study record (k-NN, linear probe, online curve, object-loss share) exactly; every number below "
              "is measured on the regenerated checkpoints (their study records: "
              f"`{os.path.relpath(os.path.join(records_dir, 'checkpoint_records'), link_dir)}/`).", ""]
    for arm in treatments:
        for metric in PRIMARY:
            cs = {split: paired_comparison(values(arms[arm], metric, split), values(arms[CONTROL_ARM], metric, split),
                                           ALPHA) for split in BAR_SPLITS}
            verdict = "met" if all(bar_met(c) for c in cs.values()) else "not met"
            detail = "; ".join(f"{split}: {'met' if bar_met(c) else 'not met'} ({c['diff_mean']:+.2f}, "
                               f"p = {format_p(c['p'])})" for split, c in cs.items())
            lines.append(f"**Bar for {arm_name(arm)} vs MAE on {NAMES[metric]}: {verdict}** ({detail}).  ")
        lines += ["", (f"{arm_name(arm)} vs MAE, paired over the {len(seeds)} seeds (mean +- sample sd; difference: "
                       f"mean +- sd, its {100 * (1 - ALPHA):g} % t-interval, two-sided paired t-test; seeds with a "
                       "positive / negative / zero difference):"), "",
                  f"| metric | split | MAE | {arm_name(arm)} | difference | {100 * (1 - ALPHA):g} % CI | t | p | "
                  "+ / - / 0 | bar |", "|---|---|---|---|---|---|---|---|---|---|"]
        for metric in (*PRIMARY, *SECONDARY):
            for split in SPLITS:
                lines.append(comparison_row(NAMES[metric], split, values(arms[arm], metric, split),
                                            values(arms[CONTROL_ARM], metric, split), metric in PRIMARY))

    lines += ["", "Attentive probe minus the features-mode linear probe of the same checkpoint (CLS, lr from the "
              "held-out sweep, measured by the method study's script on these checkpoints), mean +- sd over seeds, "
              "and the wall-clock of each evaluation (one torch thread, other jobs on the machine):", "",
              "| arm | split | linear top-1 | attentive top-1 | attentive - linear | head parameters | retrieval s (CLS "
              "features from the study's cache) | attentive s (tokens extracted, sweep, retrain) |", "|---|---|---|---|---|---|---|---|"]
    for arm, runs in arms.items():
        for split in SPLITS:
            linear, attentive = values(runs, ("linear", "top1"), split), values(runs, ("attentive", "top1"), split)
            gain = mean_and_sd([a - b for a, b in zip(attentive, linear)])
            params = sorted({r["attentive_num_parameters"] for r in runs})
            lines.append(f"| {arm_name(arm)} | {split} | {mean_and_sd(linear)[0]:.1f} +- {mean_and_sd(linear)[1]:.1f} | "
                         f"{mean_and_sd(attentive)[0]:.1f} +- {mean_and_sd(attentive)[1]:.1f} | {gain[0]:+.1f} +- "
                         f"{gain[1]:.1f} | {', '.join(map(str, params))} | "
                         f"{mean_and_sd([r['seconds']['retrieval'] for r in runs])[0]:.0f} | "
                         f"{mean_and_sd([r['seconds']['attentive'] for r in runs])[0]:.0f} |")
    picture = os.path.join(records_dir, f"{setting}_embedding_tsne.png")
    if os.path.isfile(picture):
        lines += ["", f"t-SNE of the CLS features of each eval split, seed {PICTURE_SEED}, MAE (top row) and AttG "
                  f"(bottom row), coloured by class:", "",
                  f"![t-SNE of {setting}]({os.path.relpath(picture, link_dir)})"]
    return "\n".join(lines)


def render(records_dir: str, results_md: str) -> str:
    settings = load_records(records_dir)
    count = sum(len(runs) for arms in settings.values() for runs in arms.values())
    link_dir = os.path.dirname(os.path.abspath(results_md))
    head = (f"Generated by `python benchmarks/eval_breadth_report.py --write` from the {count} records in "
            f"`{os.path.relpath(records_dir, link_dir)}/`; edit the records or the script, not this block. Primary "
            f"metrics (fixed before the runs, {os.path.relpath(os.path.join(records_dir, 'PROTOCOL.md'), link_dir)}): "
            f"{' and '.join(NAMES[m] for m in PRIMARY)}, each with its own bar: p < {ALPHA:g} (two-sided paired "
            f"t-test over seeds) with a positive mean difference on each of {' and '.join(BAR_SPLITS)}. The two "
            "metrics are tested without a multiple-comparison correction.")
    return "\n\n".join([head] + [render_setting(s, settings[s], link_dir, os.path.abspath(records_dir))
                                 for s in sorted(settings)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", default=RECORDS_DIR, help="folder of <setting>/seed<S>-<arm>.json records")
    parser.add_argument("--results-md", default=RESULTS_MD, help="the markdown file holding the markers")
    parser.add_argument("--write", action="store_true", help="replace the block between the markers")
    args = parser.parse_args(argv)
    text = render(args.records, args.results_md)
    if args.write:
        write_between_markers(args.results_md, text, BEGIN, END)
    else:
        print(text)


if __name__ == "__main__":
    main()
