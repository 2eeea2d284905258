"""The first command to run on a lent accelerator (issue 24, item 1): every GPU figure the package lacks, side by
side in one run of about 8 minutes, written to one JSON file and printed as a markdown table for docs/RESULTS.md.

    python benchmarks/accelerator_campaign.py                         # -> docs/results/accelerator/<date>.json
    python benchmarks/accelerator_campaign.py --sections loader pilot # rerun some sections into the same file
    python benchmarks/accelerator_campaign.py --smoke                 # tiny sizes, < 1 min on a CPU -> outputs/
    python benchmarks/accelerator_campaign.py --render docs/results/accelerator/<date>.json   # the table again

Sections (`--sections`, in this order; the JSON is rewritten after every measured row, so a killed run keeps what
it measured, and a rerun into the same `--output` replaces only the sections it runs):

  step    AttG's training step (forward, backward, AdamW; `AttGViTMAEForPreTraining`, attg guidance, a map batch)
          against stock `transformers.ViTMAEForPreTraining` with the same weights and masking noise, interleaved
          (benchmarks/overhead.py's step): ViT-B/16 and ViT-L/16 at 224 px, bf16 autocast, eager and
          `torch.compile`; ms per step and the per-pair ratio AttG / stock (goal <= 1.005; paper: < 1 %).
  maps    the stored-map step (`AttentionMapStep`: dino, batched tokencut) with ViT-S/16 and ViT-B/16 detectors:
          the batched detector on the device, the step end to end on JPEG rows (decode, resize, detector, stored
          grid; one process), and the per-image reference (the official TokenCut: the last block's keys one image
          at a time on the device, then the dense scipy eigensolver on the CPU, benchmarks/attention_maps.py's);
          images/s and the projected hours for ImageNet-1k's 1.28 M training images.
  loader  images/s that run_pretrain's training DataLoader (AttGTrainer.get_train_dataloader over `training_rows`,
          `PretrainCollator(PretrainTransform)`, stored maps) delivers from JPEG rows of a `datasets` Dataset made
          here, with 0 / 4 / 8 / 16 workers, against what the AttG step of `step` consumes at ViT-B and ViT-L.
  online  online maps (`OnlineAttentionMaps`, one ViT-S/16 detector forward per augmented crop batch, as
          `--attention_online` runs them) on the ViT-B AttG step: the step with online maps against the step
          with a stored map batch.
  pilot   the method study at GPU scale: MAE and AttG through run_pretrain.py (subprocesses, attg_vs_mae.py's
          arguments) at 64 px on the synthetic set with the hue cue and vivid backgrounds, for a fixed step
          budget, and the go/no-go rule fixed below (GO_NO_GO): does MAE's k-NN clear the training-free
          baselines (`evaluation.baselines.training_free_knn`)? MAE, the baselines and the decision come first,
          AttG (one seed beside it, no test) last, where the budget still allows it.

No weights are downloaded: every detector is a randomly initialised ViT of the named architecture (the cost does
not depend on the weights; the maps themselves mean nothing) and every encoder starts from scratch.

`--budget_s` (default 480, i.e. 8 minutes) skips what would end past it, by the estimates in PLANS, recorded as
skipped with the reason and the command that runs it. `--smoke` runs every section with tiny models (a 2-layer
32-dim ViT at 32 px), 2-3 repeats, a handful of images and a 3-step pilot, in well under a minute on a CPU, and
writes the same schema with `"smoke": true` (to outputs/, not docs/): its numbers are CPU numbers of toy models,
they check the code path and say nothing about an accelerator. On a GPU `--smoke` is a one-minute check of every
section before the full run.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import io
import json
import multiprocessing
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

# the campaign needs no Hub (random detectors, synthetic data): fail at once rather than wait on a network that a
# lent machine does not have; set before transformers / datasets read them at import, inherited by the pilot's runs
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))  # this checkout's package, not an installed one

import numpy as np  # noqa: E402
import torch  # noqa: E402

import attg_vs_mae as study  # noqa: E402
from attention_maps import scipy_tokencut  # noqa: E402
from overhead import adamw, paired_models, step_inputs, training_step  # noqa: E402
from pretrain_throughput import VIT_B16_DETECTOR, VIT_S16_DETECTOR, random_vit_detector  # noqa: E402
from timing import summary, time_call, time_interleaved, timed_call  # noqa: E402

from modeling_attg_mae.pretraining import MODEL_PRESETS  # noqa: E402

SCHEMA_VERSION = 1
SECTIONS = ("step", "maps", "loader", "online", "pilot")
RESULTS_DIR = REPO / "docs" / "results" / "accelerator"
SMOKE_DIR = REPO / "outputs" / "accelerator_campaign"
IMAGENET_TRAIN_IMAGES = 1_281_167  # ImageNet-1k's training split
STEP_GOAL_RATIO = 1.005  # the goal for AttG / stock (the paper claims < 1 % extra training time)
WEIGHTS_NOTE = ("no pretrained weights: every detector is a randomly initialised ViT of the named architecture "
                "(timing does not depend on the weights; its maps mean nothing) and every encoder starts from scratch")

# The pilot's go/no-go rule, fixed here before any accelerator run: a method study at GPU scale is worth its
# device time only where a pre-trained MAE reads the class better than a statistic that needs no training;
# otherwise the study cannot say what pre-training, let alone the guided loss, adds. The margin is the one the
# protocol reports use for "cannot decide" (benchmarks/protocol_report.py, decide_margin).
GO_NO_GO = {
    "metric": "k-NN top-1 (%), CLS token, k = 20, bank = train split, of MAE's exported checkpoint (run_pretrain "
              "--run_knn)",
    "splits": ["validation", "validation_mixed_rand"],
    "margin_points": 5.0,
    "rule": "go if, on every split listed, MAE's k-NN top-1 exceeds the best training-free baseline "
            "(evaluation.baselines.training_free_knn: raw pixels, RGB histogram, hue histogram, the object mask "
            "alone) on the same split by at least margin_points after the pilot's fixed step budget; else no-go",
}
PILOT_DATA = ["--synthetic_class_cue", "hue", "--synthetic_background_palette", "vivid", "--synthetic_image_size", "64"]
PILOT_ARMS = ("none", "attg")  # MAE, AttG


def _encoder(preset: str) -> dict:
    return {**MODEL_PRESETS[preset], "norm_pix_loss": True}


# 2-layer 32-dim ViTs at 32 px (4 px patches) standing in for the real sizes in --smoke
_TINY = dict(image_size=32, patch_size=4, num_hidden_layers=2, num_attention_heads=2, norm_pix_loss=True,
             decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
             decoder_intermediate_size=64)
_TINY_DETECTOR = dict(image_size=32, patch_size=4, num_hidden_layers=2, num_attention_heads=2)

# What each run measures. `estimates_s`: seconds a section (or a step row) is expected to take, for --budget_s;
# guesses before the first accelerator run, to be replaced by the `seconds` its JSON records.
PLANS = {
    "full": {
        "step_models": {"ViT-B/16": _encoder("base"), "ViT-L/16": _encoder("large")},
        "step_batch": 64, "step_repeats": 20, "step_warmup": 3,
        "detectors": {"ViT-S/16": VIT_S16_DETECTOR, "ViT-B/16": VIT_B16_DETECTOR},
        "map_batch": 64, "map_images": 256, "map_repeats": 3, "reference_images": 16,
        "jpeg_size": (500, 375),  # ImageNet's most common image size (width, height)
        "loader_images": 4096, "loader_workers": [0, 4, 8, 16], "loader_batch": 64, "loader_repeats": 3,
        "loader_min_timed_batches": 8,
        "online_model": "ViT-B/16", "online_detector": "ViT-S/16", "online_repeats": 20,
        # MAE and AttG, the demo encoder at 64 px (16 x 16 patches of 4 px, the maps' grid), 2000 steps of 128
        # (64 epochs of the 4000 training images), the demo's learning rate, the online k-NN every 500 steps
        "pilot_args": ["--config_overrides", "image_size=64", "--max_steps", "2000",
                       "--per_device_train_batch_size", "128", "--knn_monitor_steps", "500"],
        "estimates_s": {"step": {("eager", "ViT-B/16"): 20, ("eager", "ViT-L/16"): 40,
                                 ("compiled", "ViT-B/16"): 100, ("compiled", "ViT-L/16"): 160},
                        "maps": 45, "loader": 45, "online": 20,
                        "pilot": {"none": 70, "baselines": 20, "attg": 60}},
        "budget_s": 480,
    },
    "smoke": {
        "step_models": {"smoke-B": {**_TINY, "hidden_size": 32, "intermediate_size": 64},
                        "smoke-L": {**_TINY, "hidden_size": 48, "intermediate_size": 96}},
        "stands_for": {"smoke-B": "ViT-B/16", "smoke-L": "ViT-L/16", "smoke-S": "ViT-S/16"},
        "step_batch": 4, "step_repeats": 3, "step_warmup": 1,
        "detectors": {"smoke-S": {**_TINY_DETECTOR, "hidden_size": 32, "intermediate_size": 64},
                      "smoke-B": {**_TINY_DETECTOR, "hidden_size": 48, "intermediate_size": 96}},
        "map_batch": 4, "map_images": 8, "map_repeats": 2, "reference_images": 3,
        "jpeg_size": (64, 48),
        "loader_images": 48, "loader_workers": [0, 2], "loader_batch": 4, "loader_repeats": 2,
        "loader_min_timed_batches": 3,
        "online_model": "smoke-B", "online_detector": "smoke-S", "online_repeats": 3,
        "pilot_args": ["--config_overrides", "image_size=64,hidden_size=32,num_hidden_layers=2,num_attention_heads=2,"
                       "intermediate_size=64,decoder_hidden_size=32,decoder_num_hidden_layers=1,"
                       "decoder_num_attention_heads=2,decoder_intermediate_size=64",
                       "--synthetic_num_train", "64", "--synthetic_num_validation", "16", "--max_steps", "3",
                       "--per_device_train_batch_size", "16", "--knn_monitor_steps", "3",
                       "--dataloader_num_workers", "0"],
        "estimates_s": {"step": {("eager", "smoke-B"): 2, ("eager", "smoke-L"): 2,
                                 ("compiled", "smoke-B"): 6, ("compiled", "smoke-L"): 6},
                        "maps": 5, "loader": 5, "online": 2, "pilot": {"none": 15, "baselines": 5, "attg": 15}},
        "budget_s": 150,
    },
}
# the pilot's flags beyond the study's defaults: no per-epoch evaluation, checkpoints or pictures (the k-NN is
# the measure), no TensorBoard
PILOT_QUIET = ["--eval_strategy", "no", "--save_strategy", "no", "--num_pictures", "0", "--report_to", "none"]


def log(message: str) -> None:
    print(f"[campaign {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Campaign:
    """The run's record (the JSON), its budget and where it is written."""

    def __init__(self, args, argv: list[str], plan_name: str, device: torch.device):
        self.args, self.argv, self.plan, self.device = args, argv, PLANS[plan_name], device
        self.smoke = plan_name == "smoke"
        self.start = time.monotonic()
        self.budget_s = args.budget_s if args.budget_s is not None else self.plan["budget_s"]
        self.output = Path(args.output)
        self.work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="attg-campaign-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.compile_backend = args.compile_backend or ("inductor" if device.type == "cuda" and not self.smoke
                                                        else "aot_eager")
        self.record = self._load_or_new()
        self._images = None

    # ------------------------------------------------------------------------------------------------ the record
    def device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return f"CPU: {platform.processor() or platform.machine()}, torch threads: {torch.get_num_threads()}"

    def _load_or_new(self) -> dict:
        run = {"started_at": _now(), "argv": self.argv, "sections": list(self.args.sections),
               "budget_s": self.budget_s, "compile_backend": self.compile_backend, **study.code_version()}
        environment = {"python": platform.python_version(), "torch": torch.__version__,
                       "cuda": torch.version.cuda, "host": socket.gethostname(), "cpu_count": os.cpu_count(),
                       "device_name": self.device_name()}
        for name in ("transformers", "datasets"):
            environment[name] = __import__(name).__version__
        if self.output.exists():
            record = json.loads(self.output.read_text())
            mismatch = [f"{key}: {record.get(key)!r} there, {value!r} here" for key, value in
                        (("schema_version", SCHEMA_VERSION), ("smoke", self.smoke), ("device", self.device.type))
                        if record.get(key) != value]
            if mismatch:
                raise SystemExit(f"{self.output} holds another kind of run ({'; '.join(mismatch)}): its sections "
                                 "would be mixed with this run's; pass another --output")
            record["runs"].append(run)
            record["environment"] = environment
            return record
        sections = {name: {"status": "not_run", "reason": "not selected in any run so far"} for name in SECTIONS}
        return {"schema_version": SCHEMA_VERSION, "script": "benchmarks/accelerator_campaign.py",
                "date": datetime.date.today().isoformat(), "device": self.device.type,
                "device_name": self.device_name(), "smoke": self.smoke,
                "numbers": ("CPU numbers of tiny stand-in models (--smoke): they check the code path and say "
                            "nothing about an accelerator") if self.smoke else f"measured on {self.device_name()}",
                "weights": WEIGHTS_NOTE, "environment": environment, "runs": [run], "sections": sections}

    def save(self) -> None:
        """The whole record, atomically: a run killed at any point leaves the last complete file."""
        self.record["updated_at"] = _now()
        self.record["elapsed_s"] = round(self.elapsed(), 1)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        partial = self.output.with_suffix(".json.partial")
        partial.write_text(json.dumps(self.record, indent=1) + "\n")
        os.replace(partial, self.output)

    # ------------------------------------------------------------------------------------------------ the budget
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def over_budget(self, estimate_s: float, rerun: str) -> str | None:
        """Why something estimated at `estimate_s` must be skipped, or None when it fits in --budget_s."""
        elapsed = self.elapsed()
        if elapsed + estimate_s <= self.budget_s:
            return None
        return (f"--budget_s {self.budget_s:.0f}: {elapsed:.0f} s elapsed + about {estimate_s:.0f} s estimated "
                f"would pass it; run it with `python benchmarks/accelerator_campaign.py {rerun}`")

    # -------------------------------------------------------------------------------------------- shared inputs
    def stands_for(self, name: str) -> str:
        return self.plan.get("stands_for", {}).get(name, name)

    def jpeg_blobs(self) -> list[bytes]:
        """The JPEG images the maps and loader sections read (made once per run)."""
        if self._images is None:
            count = max(self.plan["loader_images"], self.plan["map_images"])
            width, height = self.plan["jpeg_size"]
            jobs = [(index, width, height) for index in range(count)]
            processes = min(os.cpu_count() or 1, 16)
            if processes > 1 and count >= 256:
                with multiprocessing.get_context("fork").Pool(processes) as pool:
                    self._images = pool.map(synthetic_jpeg, jobs, chunksize=32)
            else:
                self._images = [synthetic_jpeg(job) for job in jobs]
        return self._images

    def images_note(self) -> str:
        width, height = self.plan["jpeg_size"]
        blobs = self.jpeg_blobs()
        return (f"{len(blobs)} distinct {width}x{height} JPEGs (quality 90, smooth random colour fields + pixel noise, "
                f"mean {np.mean([len(b) for b in blobs]) / 1e3:.0f} kB), not photographs")


def synthetic_jpeg(job: tuple[int, int, int]) -> bytes:
    """One JPEG: a smooth random colour field with pixel noise (so that it does not compress to nothing)."""
    from PIL import Image

    index, width, height = job
    rng = np.random.default_rng([24, index])
    low = rng.integers(0, 256, (max(2, height // 32), max(2, width // 32), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(low).resize((width, height), Image.BICUBIC), dtype=np.int16)
    noisy = np.clip(smooth + rng.integers(-16, 17, smooth.shape, dtype=np.int16), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------- a. step
def step_row(campaign: Campaign, name: str, config: dict, compiled: bool) -> dict:
    """One (model, eager / compiled) row: stock and AttG steps interleaved, the same weights, pixels and noise."""
    from torch._dynamo.utils import counters

    plan, device = campaign.plan, campaign.device
    batch = plan["step_batch"]
    row = {"model": name, "stands_for": campaign.stands_for(name), "image_size": config["image_size"],
           "patch_size": config["patch_size"], "batch_size": batch, "autocast": "bfloat16",
           "compile": campaign.compile_backend if compiled else None}
    models = paired_models(config, device)
    inputs = step_inputs(config, batch, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    if compiled:
        torch._dynamo.reset()
    steps, first_call_s, graph_breaks = {}, {}, {}
    for side, model in models.items():
        # the Trainer's --torch_compile: the model compiled, the optimizer step eager
        runner = torch.compile(model, backend=campaign.compile_backend) if compiled else model
        steps[side] = training_step(runner, adamw(model), inputs[side], autocast)
        counters.clear()
        first_call_s[side] = round(timed_call(steps[side], device), 2)  # with compile: the compilation
        graph_breaks[side] = sum(counters["graph_break"].values()) if compiled else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = time_interleaved(steps, device, repeats=plan["step_repeats"], warmup=plan["step_warmup"])
    ratios = [a / s for a, s in zip(times["attg"], times["stock"])]
    row.update({
        "stock_ms": summary(times["stock"], 1e3), "attg_ms": summary(times["attg"], 1e3),
        "ratio": summary(ratios), "goal_ratio": STEP_GOAL_RATIO,
        "meets_goal": summary(ratios)["median"] <= STEP_GOAL_RATIO,
        "attg_images_per_s": round(batch / summary(times["attg"])["median"], 1),
        "first_call_s": first_call_s, "graph_breaks": graph_breaks,
        "peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
    })
    if compiled:
        torch._dynamo.reset()
    del models, steps
    _release(device)
    return row


def step_section(campaign: Campaign, section: dict) -> None:
    section.update({"timer": "wall clock between torch.cuda.synchronize() calls (CPU: plain wall clock), stock and "
                             "AttG interleaved A B / B A; ratio = per-pair AttG / stock",
                    "step": "forward + backward + AdamW step, same weights and masking noise; AttG gets a random "
                            "map batch on the patch grid",
                    "rows": []})
    for mode in ("eager", "compiled"):
        for name, config in campaign.plan["step_models"].items():
            estimate = campaign.plan["estimates_s"]["step"][(mode, name)]
            reason = campaign.over_budget(estimate, "--sections step --output " + str(campaign.output))
            label = f"{name} {mode}"
            if reason:
                section["rows"].append({"model": name, "stands_for": campaign.stands_for(name), "compile":
                                        campaign.compile_backend if mode == "compiled" else None,
                                        "skipped": reason})
                log(f"step: {label} skipped ({reason})")
            else:
                log(f"step: {label} ...")
                try:
                    row = step_row(campaign, name, config, mode == "compiled")
                    log(f"step: {label}: stock {row['stock_ms']['median']:.2f} ms, AttG {row['attg_ms']['median']:.2f}"
                        f" ms; AttG / stock {row['ratio']['median']:.4f} ({row['ratio']['min']:.4f}-"
                        f"{row['ratio']['max']:.4f})")
                except Exception as error:  # an OOM or a compile failure loses this row, not the campaign
                    row = {"model": name, "stands_for": campaign.stands_for(name), "error": _error(error)}
                    log(f"step: {label} FAILED: {row['error']}")
                    _release(campaign.device)
                section["rows"].append(row)
            campaign.save()


# ---------------------------------------------------------------------------------------------------- b. maps
def maps_section(campaign: Campaign, section: dict) -> None:
    from modeling_attg_mae.object_discovery import AttentionMapStep
    from modeling_attg_mae.object_discovery.dino import last_block_query_key
    from modeling_attg_mae.object_discovery.tokencut import normalized_cut

    plan, device = campaign.plan, campaign.device
    batch, repeats = plan["map_batch"], plan["map_repeats"]
    rows_in = [{"bytes": blob, "path": None} for blob in campaign.jpeg_blobs()[:plan["map_images"]]]
    section.update({"images": campaign.images_note(), "weights": WEIGHTS_NOTE,
                    "dtype": "float32 (run_pretrain's stored-map step: no detector dtype flag)",
                    "imagenet_images": IMAGENET_TRAIN_IMAGES, "rows": [], "graph_cut": []})
    for detector_name, config in plan["detectors"].items():
        folder = random_vit_detector(str(campaign.work / f"detector-{detector_name.replace('/', '')}"), config)
        size, patch = config["image_size"], config["patch_size"]
        grid = size // patch
        pixels = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        for method in ("dino", "tokencut"):
            log(f"maps: {method}, {detector_name} detector ...")
            # the detector's own input size (the methods default to 224 px, DINO's)
            step = AttentionMapStep(method, folder, grid_size=grid, device=str(device), image_size=size)
            detector = step.detector()
            batched = time_call(lambda: detector.compute(pixels), device, repeats)
            chunks = [(rows_in[i:i + batch], list(range(i, min(i + batch, len(rows_in)))))
                      for i in range(0, len(rows_in), batch)]
            end_to_end = time_call(lambda: [step({"image": rows}, indices) for rows, indices in chunks], device,
                                   repeats, warmup=0 if campaign.smoke else 1)
            if method == "dino":  # DINO's own visualisation: one image per forward
                def reference_one(image):
                    detector.compute(image)
                reference_what = f"one image per forward on {device.type}"
            else:  # the official TokenCut: one image's keys on the device, the dense scipy eigensolver on the CPU
                def reference_one(image):
                    _, key = last_block_query_key(detector.model, image)  # (1, heads, T, hd)
                    keys = key.transpose(1, 2).reshape(1, key.shape[2], -1)[0, 1:]  # (N, D), CLS dropped
                    scipy_tokencut(keys.cpu().double().numpy(), (grid, grid))
                reference_what = (f"one image's last-block keys on {device.type}, then the official dense scipy "
                                  "eigensolver + component labelling on the CPU")
            reference_images = [pixels[i:i + 1] for i in range(min(plan["reference_images"], batch))]
            timed_call(lambda: reference_one(reference_images[0]), device)  # warm-up
            reference = [timed_call(lambda: reference_one(image), device) for image in reference_images]
            rates = {"batched_on_device": [batch / t for t in batched],
                     "map_step_end_to_end": [len(rows_in) / t for t in end_to_end],
                     "per_image_reference": [1 / t for t in reference]}
            row = {"method": method, "detector": detector_name, "stands_for": campaign.stands_for(detector_name),
                   "input_size": size, "grid": grid, "batch_size": batch,
                   "what": {"batched_on_device": f"{method}'s compute on a preprocessed batch of {batch}",
                            "map_step_end_to_end": f"AttentionMapStep on undecoded JPEG rows in batches of {batch}: "
                                                   "decode, resize, detector, stored float16 grid; one process, "
                                                   "datasets' Arrow writing aside",
                            "per_image_reference": reference_what},
                   "images_per_s": {key: summary(value) for key, value in rates.items()}}
            medians = {key: value["median"] for key, value in row["images_per_s"].items()}
            row["speedup_vs_reference"] = {key: round(medians[key] / medians["per_image_reference"], 2)
                                           for key in ("batched_on_device", "map_step_end_to_end")}
            row["imagenet_hours"] = {key: round(IMAGENET_TRAIN_IMAGES / value / 3600, 3)
                                     for key, value in medians.items()}
            section["rows"].append(row)
            log(f"maps: {method}, {detector_name}: batched {medians['batched_on_device']:.1f} images/s, end to end "
                f"{medians['map_step_end_to_end']:.1f}, per-image reference {medians['per_image_reference']:.1f}; "
                f"ImageNet-1k {row['imagenet_hours']['map_step_end_to_end']:.2f} h end to end vs "
                f"{row['imagenet_hours']['per_image_reference']:.2f} h")
            campaign.save()
            if method == "tokencut":  # the graph cut alone, on the same keys: batched torch vs per-image scipy
                _, key = last_block_query_key(detector.model, pixels)
                keys = key.transpose(1, 2).reshape(batch, key.shape[2], -1)[:, 1:].float()  # (B, N, D)
                keys_np = keys.cpu().double().numpy()
                torch_s = time_call(lambda: normalized_cut(keys, (grid, grid)), device, repeats)
                scipy_s = time_call(lambda: [scipy_tokencut(k, (grid, grid)) for k in keys_np], torch.device("cpu"),
                                    max(1, repeats // 2), warmup=0)
                ours = normalized_cut(keys, (grid, grid)).bool().cpu().numpy()
                same = float(np.mean([(ours[i] == scipy_tokencut(keys_np[i], (grid, grid))).all()
                                      for i in range(batch)]))
                cut = {"detector": detector_name, "stands_for": campaign.stands_for(detector_name), "batch_size": batch,
                       "batched_ms_per_image": summary([t / batch for t in torch_s], 1e3),
                       "scipy_ms_per_image": summary([t / batch for t in scipy_s], 1e3),
                       "same_partition_fraction": round(same, 3)}
                cut["speedup"] = round(cut["scipy_ms_per_image"]["median"] / cut["batched_ms_per_image"]["median"], 2)
                section["graph_cut"].append(cut)
                campaign.save()
            _release(device)


# -------------------------------------------------------------------------------------------------- c. loader
def loader_dataset(campaign: Campaign, grid: int):
    """run_pretrain's training rows over JPEGs: a saved `datasets` Dataset (image + a stored float16 map column),
    read back memory-mapped, images undecoded, row ids for the seeded crops, batches through Arrow."""
    import datasets

    from modeling_attg_mae.data import training_rows, undecoded_images

    blobs = campaign.jpeg_blobs()[:campaign.plan["loader_images"]]
    maps = np.random.default_rng(0).random((len(blobs), grid, grid), dtype=np.float32).astype(np.float16)
    features = datasets.Features({"image": datasets.Image(),
                                  "attention_map": datasets.Array2D((grid, grid), "float16")})
    table = datasets.Dataset.from_dict({"image": [{"bytes": b, "path": None} for b in blobs],
                                        "attention_map": list(maps)}, features=features)
    folder = campaign.work / "loader-dataset"
    table.save_to_disk(str(folder))
    train = undecoded_images(datasets.load_from_disk(str(folder)))
    train = train.add_column("__index__", list(range(len(train))))
    return training_rows(train, ["image", "attention_map", "__index__"])


def step_consumption(campaign: Campaign) -> dict:
    """What the AttG step consumes, images/s: per model, its fastest measured row of the step section (this run's
    or the file's)."""
    consumption = {}
    for row in campaign.record["sections"]["step"].get("rows", []):
        if "attg_ms" not in row:
            continue
        rate = row["batch_size"] / row["attg_ms"]["median"] * 1e3
        best = consumption.get(row["stands_for"])
        if best is None or rate > best["images_per_s"]:
            consumption[row["stands_for"]] = {"images_per_s": round(rate, 1), "model": row["model"],
                                              "compile": row["compile"], "batch_size": row["batch_size"]}
    return consumption


def loader_section(campaign: Campaign, section: dict) -> None:
    from transformers import TrainingArguments

    from modeling_attg_mae import AttGViTMAEConfig, AttGViTMAEForPreTraining
    from modeling_attg_mae.data import PretrainCollator, PretrainTransform
    from modeling_attg_mae.pretraining import AttGTrainer

    plan, device = campaign.plan, campaign.device
    crop_config = next(iter(plan["step_models"].values()))
    size, patch = crop_config["image_size"], crop_config["patch_size"]
    batch = plan["loader_batch"]
    rows = loader_dataset(campaign, size // patch)
    collator = PretrainCollator(PretrainTransform(size, patch), require_attention_map=True, seed=0)
    # the Trainer wants a model; its loader never touches it
    model = AttGViTMAEForPreTraining(AttGViTMAEConfig(**{**_TINY, "image_size": size, "patch_size": patch,
                                                         "hidden_size": 32, "intermediate_size": 64}))
    section.update({"images": campaign.images_note(), "crop": f"{size} px, {patch} px patches, stored "
                    f"{size // patch}x{size // patch} float16 maps", "batch_size": batch, "cpu_count": os.cpu_count(),
                    "what": "AttGTrainer.get_train_dataloader() (run_pretrain's: RandomResizedCrop + flip of image "
                            "and map, batches moved to the device) iterated alone: the GPU idle, the main process "
                            "free; the first max(1, workers) batches untimed (worker start-up)",
                    "rows": []})
    for workers in plan["loader_workers"]:
        warm, timed = max(1, workers), max(plan["loader_min_timed_batches"], 3 * workers)
        if (warm + timed) * batch > len(rows):
            raise ValueError(f"{workers} workers need {(warm + timed) * batch} rows, the dataset has {len(rows)}")
        args = TrainingArguments(output_dir=str(campaign.work / "loader-trainer"), per_device_train_batch_size=batch,
                                 dataloader_num_workers=workers, dataloader_pin_memory=device.type == "cuda",
                                 remove_unused_columns=False, report_to=[], use_cpu=device.type == "cpu",
                                 disable_tqdm=True, seed=0)
        trainer = AttGTrainer(model=model, args=args, train_dataset=rows, data_collator=collator)
        log(f"loader: {workers} workers ...")
        rates = []
        for _ in range(plan["loader_repeats"]):
            batches = iter(trainer.get_train_dataloader())
            for _ in range(warm):
                next(batches)
            start = time.perf_counter()
            for _ in range(timed):
                next(batches)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            rates.append(timed * batch / (time.perf_counter() - start))
            del batches
        section["rows"].append({"num_workers": workers, "timed_batches": timed, "images_per_s": summary(rates)})
        log(f"loader: {workers} workers: {summary(rates)['median']:.1f} images/s")
        campaign.save()
    _bounds(campaign, section)


def _bounds(campaign: Campaign, section: dict) -> None:
    """Loader against step: which one bounds a run, by how much, per worker count and model."""
    consumption = step_consumption(campaign)
    section["gpu_consumption"] = consumption or None
    section["bounds"] = []
    if not consumption:
        section["bounds_note"] = "no step row measured (run --sections step): nothing to compare the loader with"
        return
    for row in section["rows"]:
        for model, step in consumption.items():
            ratio = row["images_per_s"]["median"] / step["images_per_s"]
            bound = "loader" if ratio < 1 else "step"
            what = step["model"] if step["model"] == model else f"{step['model']} (for {model})"
            verdict = (f"loader-bound: it delivers {ratio:.0%} of what the {what} step consumes" if ratio < 1 else
                       f"step-bound: the loader delivers {ratio:.2f}x what the {what} step consumes")
            section["bounds"].append({"num_workers": row["num_workers"], "model": model,
                                      "loader_over_step": round(ratio, 3), "bound": bound, "verdict": verdict})


# -------------------------------------------------------------------------------------------------- d. online
def online_section(campaign: Campaign, section: dict) -> None:
    from modeling_attg_mae import AttGViTMAEConfig, AttGViTMAEForPreTraining
    from modeling_attg_mae.object_discovery import OnlineAttentionMaps

    plan, device = campaign.plan, campaign.device
    model_name, detector_name = plan["online_model"], plan["online_detector"]
    config, batch = plan["step_models"][model_name], plan["step_batch"]
    folder = random_vit_detector(str(campaign.work / "online-detector"), plan["detectors"][detector_name])
    dtype = "bfloat16" if device.type == "cuda" else "float32"  # run_pretrain's training dtype (--bf16 on a GPU)
    torch.manual_seed(0)
    model = AttGViTMAEForPreTraining(AttGViTMAEConfig(**config)).to(device)
    optimizer = adamw(model)
    inputs = step_inputs(config, batch, device)["attg"]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    section.update({"model": model_name, "stands_for": campaign.stands_for(model_name),
                    "detector": detector_name, "detector_stands_for": campaign.stands_for(detector_name),
                    "detector_dtype": dtype, "batch_size": batch, "weights": WEIGHTS_NOTE,
                    "what": "the AttG step (eager, bf16 autocast) with a stored map batch vs the same step after "
                            "OnlineAttentionMaps on its pixels (per crop batch, what --attention_online does), "
                            "interleaved; ratio = per-pair online / stored",
                    "rows": []})
    stored = training_step(model, optimizer, inputs, autocast)
    online_inputs = dict(inputs)
    online_step = training_step(model, optimizer, online_inputs, autocast)
    for method in ("dino", "tokencut"):
        log(f"online: {method} ...")
        online_maps = OnlineAttentionMaps.build(method, folder, device=device, dtype=dtype,
                                                image_size=plan["detectors"][detector_name]["image_size"])

        def online():
            online_inputs["attention_map"] = online_maps(inputs["pixel_values"])  # (B, h, w) on the device
            online_step()

        times = time_interleaved({"stored": stored, "online": online}, device, plan["online_repeats"],
                                 warmup=plan["step_warmup"])
        maps_only = time_call(lambda: online_maps(inputs["pixel_values"]), device, plan["online_repeats"])
        ratios = [o / s for o, s in zip(times["online"], times["stored"])]
        row = {"method": method, "stored_ms": summary(times["stored"], 1e3), "online_ms": summary(times["online"], 1e3),
               "maps_only_ms": summary(maps_only, 1e3), "ratio": summary(ratios)}
        section["rows"].append(row)
        log(f"online: {method}: stored {row['stored_ms']['median']:.2f} ms, online {row['online_ms']['median']:.2f} ms"
            f" per step; online / stored {row['ratio']['median']:.3f}")
        campaign.save()
    del model, optimizer
    _release(device)


# --------------------------------------------------------------------------------------------------- e. pilot
def go_no_go(mae_knn: dict, training_free: dict) -> dict:
    """GO_NO_GO applied: MAE's k-NN against the best training-free baseline on each of its splits."""
    margin = GO_NO_GO["margin_points"]
    per_split = {}
    for split in GO_NO_GO["splits"]:
        name, best = max(((name, values[split]) for name, values in training_free.items()), key=lambda kv: kv[1])
        per_split[split] = {"mae": mae_knn[split], "best_training_free": best, "best_training_free_name": name,
                            "mae_minus_best": round(mae_knn[split] - best, 2),
                            "clears": mae_knn[split] - best >= margin}
    decision = "go" if all(entry["clears"] for entry in per_split.values()) else "no-go"
    return {**GO_NO_GO, "per_split": per_split, "decision": decision}


def _pilot_arm(argv: list[str], output_dir: Path) -> dict:
    """One run_pretrain.py run of the pilot and what it measured."""
    start = time.monotonic()
    study._train(argv, output_dir / "train.log")
    state = json.loads((output_dir / "trainer_state.json").read_text())
    history = state["log_history"]
    return {"argv": argv, "wall_s": round(time.monotonic() - start, 1),
            "knn_cls": study._top1(json.loads((output_dir / "knn_results.json").read_text()), "knn", k=study.KNN_K),
            "train_runtime_s": next((e["train_runtime"] for e in history if "train_runtime" in e), None),
            "steps": state.get("global_step"), "knn_monitor_curve": study.knn_curve(history)}


def pilot_section(campaign: Campaign, section: dict) -> None:
    """MAE, then the baselines and the decision, then AttG: what the decision needs first, should time run out."""
    plan, device = campaign.plan, campaign.device
    estimates = plan["estimates_s"]["pilot"]
    work = campaign.work / "pilot"
    user = [*PILOT_DATA, *plan["pilot_args"], *PILOT_QUIET, "--cache_dir", str(work / "cache")]
    if device.type == "cuda":
        user += ["--bf16", "true"]
    elif torch.cuda.is_available():
        user += ["--use_cpu", "true"]
    section.update({"go_no_go": {**GO_NO_GO, "decision": None}, "arms": {}, "run_pretrain_flags": user})
    argvs = {arm: study.run_arguments(0, arm, work / arm, user) for arm in PILOT_ARMS}
    for argv in argvs.values():  # run_pretrain's own checks, before any training
        study.check_run(argv)
    log("pilot: run_pretrain.py, MAE ...")
    mae = section["arms"]["none"] = _pilot_arm(argvs["none"], work / "none")
    log(f"pilot: MAE: k-NN top-1 (CLS, k = {study.KNN_K}) {mae['knn_cls']} in {mae['wall_s']:.0f} s")
    campaign.save()
    log("pilot: training-free baselines and the random initialisation ...")
    baselines = study.make_baselines_record("pilot", 0, study.run_arguments(0, "none", work / "baselines", user),
                                            work / "baselines")
    section["training_free"] = baselines["training_free"]
    section["random_init_knn"] = baselines["random_init"]["knn"]
    section["go_no_go"] = go_no_go(mae["knn_cls"], baselines["training_free"])
    section["note"] = ("the decision is about MAE against the training-free baselines only; AttG beside it is one "
                       "seed, no test of AttG (the study's protocol needs its seeds)")
    if campaign.smoke:
        section["note"] += "; smoke: a 3-step toy run, its decision means nothing"
    log(f"pilot: go/no-go: {section['go_no_go']['decision']} "
        f"({ {s: e['mae_minus_best'] for s, e in section['go_no_go']['per_split'].items()} } points over the best "
        "training-free baseline)")
    campaign.save()
    reason = campaign.over_budget(estimates["attg"], f"--sections pilot --output {campaign.output}")
    if reason:
        section["arms"]["attg"] = {"skipped": reason}
        log(f"pilot: AttG skipped ({reason})")
        return
    log("pilot: run_pretrain.py, AttG ...")
    attg = section["arms"]["attg"] = _pilot_arm(argvs["attg"], work / "attg")
    section["attg_minus_mae"] = {split: round(attg["knn_cls"][split] - mae["knn_cls"][split], 2)
                                 for split in mae["knn_cls"]}
    log(f"pilot: AttG: k-NN top-1 (CLS, k = {study.KNN_K}) {attg['knn_cls']} in {attg['wall_s']:.0f} s")


# ----------------------------------------------------------------------------------------------------- driver
SECTION_RUNNERS = {"step": step_section, "maps": maps_section, "loader": loader_section, "online": online_section,
                   "pilot": pilot_section}


def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"[:500]


def run_sections(campaign: Campaign) -> bool:
    """Every selected section in order; each written as it goes. True when none failed."""
    ok = True
    for name in SECTIONS:
        if name not in campaign.args.sections:
            continue
        estimate = campaign.plan["estimates_s"][name]
        estimate = sum(estimate.values()) if isinstance(estimate, dict) else estimate
        # step and pilot decide piece by piece: here, whether their first piece fits (the pilot's: MAE and the
        # baselines, which its decision needs)
        pieces = campaign.plan["estimates_s"]
        first = {"step": min(pieces["step"].values()), "pilot": pieces["pilot"]["none"] + pieces["pilot"]["baselines"]
                 }.get(name, estimate)
        reason = campaign.over_budget(first, f"--sections {name} --output {campaign.output}")
        section = {"status": "running", "started_at": _now(), "device_name": campaign.device_name(),
                   "commit": campaign.record["runs"][-1]["commit"], "estimate_s": estimate}
        campaign.record["sections"][name] = section
        if reason:
            section.update({"status": "skipped", "reason": reason})
            log(f"{name}: skipped ({reason})")
            campaign.save()
            continue
        log(f"{name}: start ({campaign.elapsed():.0f} s elapsed, about {estimate:.0f} s estimated)")
        campaign.save()
        start = time.monotonic()
        try:
            SECTION_RUNNERS[name](campaign, section)
            section["status"] = "done"
        except Exception as error:  # a section that fails must not lose the others' numbers
            section.update({"status": "failed", "error": _error(error),
                            "traceback": traceback.format_exc().splitlines()[-12:]})
            log(f"{name}: FAILED: {section['error']}")
            ok = False
            _release(campaign.device)
        section["seconds"] = round(time.monotonic() - start, 1)
        campaign.save()
        log(f"{name}: {section['status']} in {section['seconds']:.0f} s")
    return ok


# ---------------------------------------------------------------------------------------------------- the table
def _spread(summary_: dict, digits: int = 1, unit: str = "") -> str:
    return f"{summary_['min']:.{digits}f}-{summary_['max']:.{digits}f}{unit} (n = {summary_['n']})"


def _label(row: dict, key: str = "model") -> str:
    name, stands = row[key], row.get("stands_for", row[key])
    return name if stands == name else f"{name} (tiny, for {stands})"


def markdown(record: dict) -> str:
    """The table for docs/RESULTS.md: one row per measurement, the spread beside each median."""
    sections = record["sections"]
    run = record["runs"][-1]
    commit = (run.get("commit") or "unknown") + (" + uncommitted changes" if run.get("uncommitted_changes") else "")
    lines = [f"Accelerator campaign of {record['date']} on {record['device_name']} "
             f"(`{record['script']}`, commit {commit}). {record['numbers']}. "
             f"{record['weights'][0].upper()}{record['weights'][1:]}.", "",
             "| section | setting | result (median) | spread (min-max over n repeats) |", "|---|---|---|---|"]

    def add(section, setting, result, spread=""):
        lines.append(f"| {section} | {setting} | {result} | {spread} |")

    for name in SECTIONS:
        section = sections[name]
        if section["status"] != "done" and not section.get("rows"):
            add(name, "-", f"{section['status']}: {section.get('reason') or section.get('error', '')}")
            continue
        if section["status"] != "done":
            add(name, "-", f"{section['status']} after the rows below: "
                           f"{section.get('reason') or section.get('error', 'killed while running?')}")
        if name == "step":
            for row in section["rows"]:
                mode = f"torch.compile ({row['compile']})" if row.get("compile") else "eager"
                if "skipped" in row or "error" in row:
                    add("step", f"{_label(row)}, {mode}", row.get("skipped") or f"failed: {row['error']}")
                    continue
                goal = "met" if row["meets_goal"] else "not met"
                add("step", f"{_label(row)}, {row['image_size']} px, batch {row['batch_size']}, bf16 autocast, {mode}",
                    f"stock {row['stock_ms']['median']:.2f} ms, AttG {row['attg_ms']['median']:.2f} ms per step; "
                    f"**AttG / stock {row['ratio']['median']:.4f}** (goal <= {row['goal_ratio']}: {goal})",
                    f"ratio {_spread(row['ratio'], 4)}; stock {_spread(row['stock_ms'], 2, ' ms')}, AttG "
                    f"{_spread(row['attg_ms'], 2, ' ms')}")
        elif name == "maps":
            for row in section["rows"]:
                rates, hours = row["images_per_s"], row["imagenet_hours"]
                add("maps", f"{row['method']}, {_label(row, 'detector')} detector (random weights), batch "
                            f"{row['batch_size']}, float32",
                    f"batched {rates['batched_on_device']['median']:.1f} images/s "
                    f"({hours['batched_on_device']:.2f} h for ImageNet-1k); map step end to end, 1 process "
                    f"{rates['map_step_end_to_end']['median']:.1f} ({hours['map_step_end_to_end']:.2f} h); per-image "
                    f"reference {rates['per_image_reference']['median']:.1f} ({hours['per_image_reference']:.2f} h): "
                    f"**{row['speedup_vs_reference']['map_step_end_to_end']:.1f}x** end to end, "
                    f"{row['speedup_vs_reference']['batched_on_device']:.1f}x batched",
                    f"batched {_spread(rates['batched_on_device'])}; end to end {_spread(rates['map_step_end_to_end'])}"
                    f"; reference {_spread(rates['per_image_reference'])}")
            for cut in section.get("graph_cut", []):
                add("maps", f"tokencut graph cut alone, {_label(cut, 'detector')} keys, batch {cut['batch_size']}",
                    f"batched {cut['batched_ms_per_image']['median']:.3f} ms/image vs per-image scipy "
                    f"{cut['scipy_ms_per_image']['median']:.3f}: **{cut['speedup']:.1f}x**; same partition on "
                    f"{cut['same_partition_fraction']:.0%} of images",
                    f"batched {_spread(cut['batched_ms_per_image'], 3, ' ms')}; scipy "
                    f"{_spread(cut['scipy_ms_per_image'], 3, ' ms')}")
        elif name == "loader":
            consumption = section.get("gpu_consumption") or {}
            for row in section["rows"]:
                verdicts = [b["verdict"] for b in section.get("bounds", []) if b["num_workers"] == row["num_workers"]]
                add("loader", f"{row['num_workers']} workers, batch {section['batch_size']}, JPEG -> {section['crop']}",
                    f"{row['images_per_s']['median']:.1f} images/s" + (f"; {'; '.join(verdicts)}" if verdicts else ""),
                    _spread(row["images_per_s"]))
            if consumption:
                add("loader", "what the AttG step consumes (fastest step row)",
                    "; ".join(f"{_label({**c, 'stands_for': model})}: {c['images_per_s']:.1f} images/s "
                              f"({c['compile'] or 'eager'}, batch {c['batch_size']})"
                              for model, c in consumption.items()))
        elif name == "online":
            detector = {"detector": section["detector"], "stands_for": section["detector_stands_for"]}
            for row in section["rows"]:
                add("online", f"{row['method']} online maps, {_label(detector, 'detector')} detector "
                              f"({section['detector_dtype']}) on the {_label(section)} AttG step, batch "
                              f"{section['batch_size']}",
                    f"stored maps {row['stored_ms']['median']:.2f} ms, online {row['online_ms']['median']:.2f} ms per "
                    f"step: **x{row['ratio']['median']:.3f}**; the maps alone {row['maps_only_ms']['median']:.2f} ms",
                    f"ratio {_spread(row['ratio'], 3)}")
        elif name == "pilot":
            rule = section["go_no_go"]
            arms = section.get("arms", {})
            for arm, result in arms.items():
                who = "MAE" if arm == "none" else "AttG"
                if "skipped" in result:
                    add("pilot", who, f"skipped: {result['skipped']}")
                    continue
                knn = ", ".join(f"{split} {value:.1f}" for split, value in result["knn_cls"].items())
                add("pilot", f"{who}, {result['steps']} steps, 64 px synthetic (hue cue, vivid backgrounds)",
                    f"k-NN top-1 (CLS, k = 20): {knn}; {result['wall_s']:.0f} s")
            if rule.get("decision"):
                detail = "; ".join(f"{split}: MAE {e['mae']:.1f} vs {e['best_training_free_name']} "
                                   f"{e['best_training_free']:.1f} ({e['mae_minus_best']:+.1f})"
                                   for split, e in rule["per_split"].items())
                add("pilot", f"go/no-go: MAE >= best training-free baseline + {rule['margin_points']} points on "
                             f"{' and '.join(rule['splits'])}", f"**{rule['decision']}**: {detail}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few repeats: checks every section fast")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="which sections to run (the others are kept from --output when it exists)")
    parser.add_argument("--output", default=None, help="the JSON file (default: docs/results/accelerator/<date>.json; "
                                                       "with --smoke outputs/accelerator_campaign/<date>-smoke.json)")
    parser.add_argument("--budget_s", type=float, default=None,
                        help="skip what would end past this many seconds of the run (default: 480; --smoke 150)")
    parser.add_argument("--device", default=None, help="default: cuda when there is one")
    parser.add_argument("--compile_backend", default=None,
                        help="torch.compile backend of the step section (default: inductor on a GPU, else "
                             "aot_eager: traces forward and backward without inductor's C++ build)")
    parser.add_argument("--work", default=None, help="folder for detectors, datasets and pilot runs (default: a "
                                                     "temporary folder, removed at the end)")
    parser.add_argument("--render", metavar="JSON", default=None, help="print the table of an existing JSON and exit")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.render:
        print(markdown(json.loads(Path(args.render).read_text())))
        return 0
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" and not args.smoke and args.device is None:
        parser.error("no CUDA device: run with --smoke (tiny sizes on the CPU), or pass --device cpu to time the "
                     "full sizes on the CPU (hours)")
    if args.output is None:
        today = datetime.date.today().isoformat()
        args.output = str(SMOKE_DIR / f"{today}-smoke.json" if args.smoke else RESULTS_DIR / f"{today}.json")
    campaign = Campaign(args, argv, "smoke" if args.smoke else "full", device)
    log(f"{campaign.device_name()}; sections {' '.join(args.sections)}; budget {campaign.budget_s:.0f} s; "
        f"-> {campaign.output}" + ("; SMOKE: tiny models, CPU-scale numbers" if args.smoke else ""))
    try:
        ok = run_sections(campaign)
    finally:
        if args.work is None:
            shutil.rmtree(campaign.work, ignore_errors=True)
    print()
    print(markdown(campaign.record))
    log(f"{campaign.output} written, {campaign.elapsed():.0f} s in all")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
