"""Ablations of AttG-MAE on the synthetic benchmark, with the harness of `attg_vs_mae.py` at a smaller budget.

Three tables, as in the paper (each run is one configuration, `--seeds` per configuration):

* map source (Table 9): the synthetic ground-truth `object_mask` (an upper bound), spectral residual saliency
  (no weights), and TokenCut on the keys of *our own* vanilla MAE's last block (the MAE run of this script,
  exported as a `ViTModel`; there is no pre-trained DINO offline, and this is the "tiny detector you can train here");
* guidance mode (Table 10): attg, input masking, foreground-only, background-only, inverted (ground-truth maps);
* temperature (Table 11): the cosine schedule 0.75 -> 1.0 vs a constant 0.75 and a constant 1.0.

The vanilla MAE ("none") and the default AttG run (ground truth, cosine) are shared by the three tables.

    python benchmarks/ablations.py                       # one seed, 10 epochs (~20 min on one free core)
    python benchmarks/ablations.py --seeds 0 1 --set epochs=10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

import torch
from transformers import ViTConfig, ViTModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attg_vs_mae import PRIMARY, parse_overrides  # noqa: E402
from study_harness import StudyConfig, map_quality, run_study, save_json, summarize  # noqa: E402

# (table, name, overrides of the base config); the first two are shared by every table
RUNS = [
    ("shared", "none", dict(guidance="none")),
    ("shared", "attg / object_mask / cosine", dict(guidance="attg")),
    ("map_source", "attg / spectral_residual", dict(guidance="attg", map_source="spectral_residual")),
    ("map_source", "attg / tokencut on own MAE", dict(guidance="attg", map_source="tokencut_self")),
    ("guidance", "input_masking", dict(guidance="input_masking")),
    ("guidance", "foreground_only", dict(guidance="foreground_only")),
    ("guidance", "background_only", dict(guidance="background_only")),
    ("guidance", "inverted", dict(guidance="inverted")),
    ("temperature", "attg / constant 0.75", dict(guidance="attg", temperature_schedule="constant")),
    ("temperature", "attg / constant 1.0", dict(guidance="attg", temperature_schedule="constant", temperature=1.0)),
]


def export_encoder_as_vit(model, folder: str) -> str:
    """Save the MAE encoder as a `ViTModel` (same weights, masking off) so that the TokenCut detector can load it.

    ViTMAEModel and ViTModel share their parameter names (embeddings.*, encoder.layer.*, layernorm.*); ViT's
    position embeddings are learned, MAE's fixed, which changes nothing once they are loaded.
    """
    config = model.config
    vit_config = ViTConfig(
        hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act, layer_norm_eps=config.layer_norm_eps, image_size=config.image_size,
        patch_size=config.patch_size, num_channels=config.num_channels, qkv_bias=config.qkv_bias,
    )
    vit = ViTModel(vit_config, add_pooling_layer=False)
    missing, unexpected = vit.load_state_dict(model.vit.state_dict(), strict=False)
    if missing or unexpected:
        raise ValueError(f"MAE encoder -> ViTModel: missing {missing}, unexpected {unexpected}")
    vit.save_pretrained(folder)
    return folder


def markdown_table(records: list[dict]) -> str:
    """One row per run (mean +- std over its seeds), primary pooling (mean) and CLS k-NN, map quality."""
    lines = ["| table | run | k-NN val | k-NN mixed_rand | k-NN only_fg | CLS k-NN val | CLS k-NN mixed_rand "
             "| linear val | linear mixed_rand | map IoU | map mass on object | recon. loss (end) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for table, name, _ in RUNS:
        mine = [r for r in records if r["name"] == name]
        if not mine:
            continue
        cells = []
        for pooling, metric in (("mean", "knn/validation"), ("mean", "knn/validation_mixed_rand"),
                                ("mean", "knn/validation_only_fg"), ("cls", "knn/validation"),
                                ("cls", "knn/validation_mixed_rand"), ("mean", "linear/validation"),
                                ("mean", "linear/validation_mixed_rand")):
            mean, std = summarize([r["results"][pooling][metric] for r in mine])
            cells.append(f"{mean:.1f}" + (f" +- {std:.1f}" if len(mine) > 1 else ""))
        quality = mine[0].get("map_quality")
        cells.append("-" if quality is None else f"{quality['iou']:.2f}")
        cells.append("-" if quality is None else f"{quality['object_share']:.2f} (area {quality['area']:.2f})")
        cells.append(f"{summarize([r['history']['loss'][-1] for r in mine])[0]:.4f}")
        lines.append(f"| {table} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--only", nargs="+", default=None, help="run only these names (substring match)")
    parser.add_argument("--output", default="outputs/study/ablations.json")
    parser.add_argument("--from_json", nargs="+", default=None, help="no training: print the table of earlier outputs")
    args = parser.parse_args(argv)
    if args.from_json:
        records = []
        for path in args.from_json:
            with open(path) as f:
                records += json.load(f)["records"]
        print(markdown_table(records))
        return
    base = StudyConfig(**{"epochs": 10, **parse_overrides(args.set)})
    torch.set_num_threads(base.threads)
    print(f"config: {dataclasses.asdict(base)}")
    start = time.perf_counter()
    detector_dir = tempfile.mkdtemp(prefix="attg_tokencut_self_")
    records = []
    for seed in args.seeds:
        for table, name, overrides in RUNS:
            if args.only and not any(part in name for part in args.only):
                continue
            config = dataclasses.replace(base, seed=seed, **overrides)
            if config.map_source == "tokencut_self":
                # the detector: this seed's vanilla MAE (run first in RUNS), exported as a ViTModel
                config = dataclasses.replace(config, tokencut_checkpoint=os.path.join(detector_dir, f"seed{seed}"))
                if not os.path.isdir(config.tokencut_checkpoint):
                    raise ValueError("tokencut_self needs this seed's 'none' run first (do not filter it out with --only)")
            record = run_study(config)
            model = record.pop("model")
            if config.guidance != "none":
                record["map_quality"] = map_quality(config)
            if name == "none":
                export_encoder_as_vit(model, os.path.join(detector_dir, f"seed{seed}"))
            record.update(table=table, name=name)
            records.append(record)
            res = record["results"][PRIMARY[0]]
            print(f"seed {seed} {name:<30} knn(mean) val {res['knn/validation']:.1f} "
                  f"mixed_rand {res['knn/validation_mixed_rand']:.1f} only_fg {res['knn/validation_only_fg']:.1f} "
                  f"final loss {record['history']['loss'][-1]:.4f} | {record['train_seconds']:.0f}s", flush=True)
    print(f"\n{'run':<30} " + " ".join(f"{s:>22}" for s in ("knn val", "knn mixed_rand", "knn only_fg", "linear val",
                                                             "linear mixed_rand")))
    for _, name, _ in RUNS:
        mine = [r for r in records if r["name"] == name]
        if not mine:
            continue
        cells = []
        for metric in ("knn/validation", "knn/validation_mixed_rand", "knn/validation_only_fg", "linear/validation",
                       "linear/validation_mixed_rand"):
            mean, std = summarize([r["results"][PRIMARY[0]][metric] for r in mine])
            cells.append(f"{mean:14.2f} +- {std:4.2f}")
        print(f"{name:<30} " + " ".join(cells))
    print("\nmap quality on train (IoU of the top cells with the ground truth; share of map mass on the object):")
    for record in records:
        if "map_quality" in record and record["config"]["guidance"] == "attg":
            q = record["map_quality"]
            print(f"  seed {record['config']['seed']} {record['config']['map_source']:<18} iou {q['iou']:.3f} "
                  f"object_share {q['object_share']:.3f} (object area {q['area']:.3f})")
    print("\n" + markdown_table(records))
    print(f"\ntotal wall-clock {time.perf_counter() - start:.0f}s, torch threads {torch.get_num_threads()}")
    save_json({"base_config": dataclasses.asdict(base), "seeds": args.seeds, "records": records,
               "wall_seconds": time.perf_counter() - start, "argv": sys.argv[1:]}, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
