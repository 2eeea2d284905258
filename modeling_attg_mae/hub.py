"""Model cards and Hub export: render the card of a checkpoint, add evaluation results, push.

The card's metadata (`pipeline_tag: image-feature-extraction`, `library_name: transformers`, tags, datasets,
base_model, `model-index`) is written with `huggingface_hub.ModelCard`; the body comes from the template in
`model_cards/`. Every evaluation result is its own metric with its own `config` (e.g. "knn-k20-top1-cls"):
`model-index` groups results by task / dataset / split, and metrics without distinct configs are easy to
confuse or collapse when cards are merged on the Hub.

Every result is written in both of the Hub's formats: the card's `model-index` (legacy since huggingface_hub 2.x,
still what the card's metadata and older tools read) and `.eval_results/attg-mae-<dataset>.yaml` (`EvalResultEntry`,
what the model page and leaderboards show). The model-index is the record: the YAML files are rewritten from it at
every change (`write_eval_results`), so a replaced or removed result leaves no stale entry in either, and a push
deletes the repo's files of ours that the folder no longer has.
"""

import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml
from huggingface_hub import (
    EvalResult,
    EvalResultEntry,
    ModelCard,
    ModelCardData,
    eval_result_entries_to_yaml,
    parse_eval_result_entries,
)
from huggingface_hub.constants import EVAL_RESULTS_FOLDER

from .package_files import packaged_path

# the repository's model_cards/ in a checkout; the copy shipped as modeling_attg_mae/model_cards in an installed wheel
TEMPLATE_PATH = packaged_path("model_cards", "attg_mae.md")
ENCODER_TEMPLATE_PATH = packaged_path("model_cards", "attg_mae_encoder.md")  # the ViTModel export (modeling_attg_mae.export)
DEFAULT_TAGS = ("attg-mae", "mae", "vit", "self-supervised")
# our files in .eval_results/: this prefix (a push deletes the repo's files of it that the folder lacks) and this
# first line (a local file of our name without it is the user's, never rewritten)
EVAL_RESULTS_PREFIX = "attg-mae-"
EVAL_RESULTS_HEADER = ("# attg-mae: written from README.md's model-index by modeling_attg_mae.hub; rewritten on every "
                       "update (edit the card, not this file)\n")
RESULTS_START, RESULTS_END = "<!-- attg-mae:results:start -->", "<!-- attg-mae:results:end -->"
_METHOD_NAMES = {
    "knn": "k-NN",
    "knn_few_shot": "few-shot k-NN",
    "linear_probe": "linear probe",
    "linear_probe_features": "linear probe (cached features)",
    "linear_few_shot": "few-shot linear probe",
    "linear_few_shot_features": "few-shot linear probe (cached features)",
    "attentive_probe": "attentive probe (cached tokens)",
    "attentive_few_shot": "few-shot attentive probe (cached tokens)",
    "fine_tune": "fine-tuning",
}


def _metric_config(row: dict, metric: str, pooling: str) -> str:
    parts = [row["method"].replace("_", "-")]
    if row.get("protocol") is not None:  # retrieval rows only: easy / medium / hard / same-label
        parts.append(row["protocol"].replace("_", "-"))
    if row.get("k") is not None:
        parts.append(f"k{row['k']}")
    if row.get("shots") is not None:
        parts.append(f"{row['shots']}shot")
    if row.get("train_fraction") is not None and row["train_fraction"] < 1:  # fine-tuning rows: low-shot subsets
        parts.append(f"{100 * row['train_fraction']:g}pct")
    parts += [metric, pooling]
    if row.get("multi_scale"):  # retrieval rows only: a multi-scale result must not replace the single-scale one
        parts.append("ms")
    if row.get("crop_queries") is False:  # revisited rows only: whole query images are not the protocol's crops
        parts.append("whole")
    if row.get("image_size_is_default") is False:  # revisited rows only: another --image_size, another protocol
        parts.append(f"{row['image_size']}px")
    return "-".join(parts)


def ground_truth_config(row: dict) -> str | None:
    """`gnd-<12 hex>` for a revisited retrieval row: its ground truth by content (`gnd_content_sha256`), the
    `dataset.config` of its model-index entry. The dataset label comes from the file's name, which two different
    ground truths can share (`gnd.pkl` in two folders): the Hub groups, and we replace, results by task, dataset
    type, config, split and revision, so without it the second file's values replaced the first's, and a metric it
    lacked (an undefined Hard) left the first's next to them."""
    content = row.get("gnd_content_sha256")
    return f"gnd-{content[:12]}" if content else None


def _retrieval_result(row: dict, dataset: str, pooling: str) -> EvalResult:
    """The mAP (in percent) of a retrieval row; its mP@k stay in the results JSON."""
    details = [row["protocol"].replace("_", " "), f"{pooling} pooling", "multi-scale" if row.get("multi_scale") else "single-scale"]
    if row.get("crop_queries") is False:
        details.append("whole query images")
    if row.get("image_size_is_default") is False:
        details.append(f"{row['image_size']}-px images")
    return EvalResult(
        task_type="image-feature-extraction",  # a Hub task id; retrieval is a use of the frozen features
        task_name="Image retrieval",
        dataset_type=dataset,
        dataset_name=dataset,
        dataset_config=ground_truth_config(row),
        dataset_split=row["split"],
        metric_type="map",
        metric_value=round(float(row["map"]), 2),
        metric_name=f"retrieval mAP ({', '.join(details)})",
        metric_config=_metric_config(row, "map", pooling),
    )


def _metric_name(row: dict, metric: str, pooling: str) -> str:
    details = [f"k={row['k']}" if row.get("k") is not None else None, f"{row['shots']}-shot" if row.get("shots") else None]
    if row.get("train_fraction") is not None and row["train_fraction"] < 1:
        details.append(f"{100 * row['train_fraction']:g}% of the labels")
    if row.get("num_seeds"):
        details.append(f"mean of {row['num_seeds']} seeds")
    # the attentive probe pools for itself over every token: "tokens pooling" would misname it
    details.append("all tokens" if pooling == "tokens" else f"{pooling} pooling")
    label = "top-1" if metric == "top1" else "top-5"
    return f"{_METHOD_NAMES.get(row['method'], row['method'])} {label} ({', '.join(d for d in details if d)})"


def eval_results_from_rows(rows: Iterable[dict], dataset: str, pooling: str) -> list[EvalResult]:
    """One `EvalResult` per (row, top1/top5), skipping per-seed rows of few-shot runs (their mean is reported);
    one mAP per retrieval row (`method` "retrieval"), none when its mAP is undefined (every query empty)."""
    results = []
    for row in rows:
        if row.get("method") == "retrieval":
            if row.get("map") is not None:
                results.append(_retrieval_result(row, dataset, pooling))
            continue
        if (row.get("shots") is not None or row.get("train_fraction") is not None) and row.get("seed") is not None:
            continue  # one seed of several: the summary row (seed None, num_seeds) is reported
        for metric in ("top1", "top5"):
            results.append(
                EvalResult(
                    task_type="image-classification",
                    dataset_type=dataset,
                    dataset_name=dataset,
                    dataset_split=row["split"],
                    metric_type="accuracy",
                    metric_value=round(float(row[metric]), 2),
                    metric_name=_metric_name(row, metric, pooling),
                    metric_config=_metric_config(row, metric, pooling),
                )
            )
    return results


def results_table(eval_results: Sequence[EvalResult]) -> str:
    if not eval_results:
        return "No evaluation yet: run `run_knn.py`, `run_linear_probe.py` or `run_retrieval.py` on this folder."
    # k-NN / probe cards keep their "accuracy" column; one with a retrieval mAP in it says "value"
    value = "accuracy (%)" if all(r.metric_type == "accuracy" for r in eval_results) else "value (%)"
    lines = [f"| dataset | split | metric | {value} |", "| --- | --- | --- | --- |"]
    # the config tells apart datasets of the same name (the ground truths of retrieval, see ground_truth_config)
    lines += [f"| {r.dataset_name}{f' ({r.dataset_config})' if r.dataset_config else ''} | {r.dataset_split} | "
              f"{r.metric_name} | {r.metric_value:.2f} |" for r in eval_results]
    return "\n".join(lines)


def _read_config(output_dir: Path) -> dict:
    path = output_dir / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def render_model_card(
    output_dir,
    *,
    base_model: str | None = None,
    datasets: Sequence[str] = (),
    object_discovery: dict,
    temperature: dict,
    training_hparams: dict,
    tags: Sequence[str] = (),
    results: Sequence[EvalResult] | Sequence[dict] | None = None,
    model_name: str | None = None,
    repo_id: str | None = None,
    results_dataset: str | None = None,
    results_pooling: str = "cls",
) -> ModelCard:
    """Write `<output_dir>/README.md` from the template and return the card.

    `results`: `EvalResult`s, or rows of the evaluation results JSON (then `results_dataset` names the dataset).
    """
    output_dir = Path(output_dir)
    if not TEMPLATE_PATH.is_file():
        raise ValueError(f"model card template not found at {TEMPLATE_PATH}")
    if not output_dir.is_dir():
        raise ValueError(f"output_dir {output_dir} is not a folder")
    for name, value in (("object_discovery", object_discovery), ("temperature", temperature), ("training_hparams", training_hparams)):
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be a dict, got {type(value).__name__}")
    eval_results = list(results or [])
    if eval_results and isinstance(eval_results[0], dict):
        if results_dataset is None:
            raise ValueError("results given as result rows need results_dataset (the dataset they were measured on)")
        eval_results = eval_results_from_rows(eval_results, results_dataset, results_pooling)
    model_name = model_name or output_dir.resolve().name
    config = _read_config(output_dir)
    card_data = ModelCardData(
        pipeline_tag="image-feature-extraction",
        library_name="transformers",
        tags=list(dict.fromkeys([*DEFAULT_TAGS, *tags])),
        datasets=list(datasets) or None,
        base_model=base_model,
        model_name=model_name,
        eval_results=eval_results or None,
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=model_name,
        repo_id=repo_id or str(output_dir),
        base_model=base_model,
        object_discovery=object_discovery,
        temperature=temperature,
        training_hparams=training_hparams,
        # the training ratio: an exported checkpoint stores 0 for stock loaders and the ratio beside it
        mask_ratio=config.get("mask_ratio", 0.75) or config.get("attg_pretraining_mask_ratio"),
        image_size=config.get("image_size", 224),
        results_table=results_table(eval_results),
    )
    card.save(output_dir / "README.md")
    write_eval_results(output_dir, eval_results)
    return card


def _same_metric(a: EvalResult, b: EvalResult) -> bool:
    return a.unique_identifier == b.unique_identifier and a.metric_config == b.metric_config


def _task_id(result: EvalResult) -> str:
    """The result's key within its dataset: what tells results of one dataset apart in model-index (the dataset's
    config, the split, the metric's config), so that both formats replace the same results."""
    return "/".join(part for part in (result.dataset_config, result.dataset_split,
                                      result.metric_config or result.metric_type) if part)


def eval_result_entries(eval_results: Iterable[EvalResult], source_url: str | None = None) -> list[EvalResultEntry]:
    """The `.eval_results` entries of model-index results: dataset id (model-index's dataset type), task id
    (`_task_id`), value, the metric's name as notes, and `source_url` (the pushed card) when known."""
    entries, seen = [], {}
    for result in eval_results:
        value, name = result.metric_value, result.metric_name or result.metric_config
        if (not result.dataset_type or isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value)):
            raise ValueError(f"the model card's result {name!r} on dataset {result.dataset_type!r} cannot go into "
                             f"{EVAL_RESULTS_FOLDER}/: an entry needs a dataset id and a finite number, got {value!r}")
        entry = EvalResultEntry(dataset_id=result.dataset_type, task_id=_task_id(result), value=float(value),
                                source_url=source_url, source_name="Model card" if source_url else None,
                                notes=result.metric_name)
        key = (entry.dataset_id, entry.task_id)
        if key in seen:  # one key, two values: the Hub would show one of them
            raise ValueError(f"the model card holds two results on dataset {key[0]!r} under task id {key[1]!r} "
                             f"({seen[key]!r} and {name!r}): give each metric its own metric config")
        seen[key] = name
        entries.append(entry)
    return entries


def is_own_eval_results_file(path: Path) -> bool:
    """A `.eval_results` file this module wrote (its name and first line), which it may rewrite or delete."""
    if not (path.is_file() and path.name.startswith(EVAL_RESULTS_PREFIX) and path.suffix == ".yaml"):
        return False
    with open(path, encoding="utf-8", errors="replace") as file:
        return file.readline() == EVAL_RESULTS_HEADER


def write_eval_results(folder, eval_results: Iterable[EvalResult], source_url: str | None = None) -> list[Path]:
    """Rewrite `<folder>/.eval_results/attg-mae-<dataset>.yaml` (one file per dataset) from model-index results and
    delete our files of datasets that have none left; files of other names are not touched, and a file of our name
    that we did not write is refused. Each file is parsed back with huggingface_hub's parser before it replaces the
    old one. Returns the files written."""
    target = Path(folder) / EVAL_RESULTS_FOLDER
    by_file: dict[Path, list[EvalResultEntry]] = {}
    for entry in eval_result_entries(eval_results, source_url):
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", entry.dataset_id).strip("._") or "dataset"
        by_file.setdefault(target / f"{EVAL_RESULTS_PREFIX}{slug}.yaml", []).append(entry)
    foreign = [path for path in by_file if path.exists() and not is_own_eval_results_file(path)]
    if foreign:
        raise ValueError(f"{', '.join(map(str, foreign))} was not written by attg-mae (no '{EVAL_RESULTS_HEADER.strip()}' "
                         "first line) and would be replaced by the card's results: move or rename it")
    for path, entries in by_file.items():
        text = yaml.safe_dump(eval_result_entries_to_yaml(entries), sort_keys=False, allow_unicode=True)
        if parse_eval_result_entries(yaml.safe_load(text)) != entries:  # the Hub's own reading of the file
            raise ValueError(f"{path}: the entries do not read back as written by huggingface_hub's parser")
        target.mkdir(exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(EVAL_RESULTS_HEADER + text, encoding="utf-8")
        partial.replace(path)
    for path in sorted(target.glob(f"{EVAL_RESULTS_PREFIX}*.yaml")) if target.is_dir() else []:
        if path not in by_file and is_own_eval_results_file(path):
            path.unlink()  # a dataset whose results are gone from the card
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    return list(by_file)


def read_eval_results(folder) -> list[EvalResultEntry]:
    """Every entry of our `.eval_results` files in `folder`, as huggingface_hub parses them."""
    target = Path(folder) / EVAL_RESULTS_FOLDER
    paths = sorted(target.glob(f"{EVAL_RESULTS_PREFIX}*.yaml")) if target.is_dir() else []
    return [entry for path in paths if is_own_eval_results_file(path)
            for entry in parse_eval_result_entries(yaml.safe_load(path.read_text(encoding="utf-8")))]


def _eval_results_for_push(folder: Path, repo_id: str) -> None:
    """Rewrite the folder's eval-results files from its card, with the pushed card as their source (its address
    is known only now)."""
    if (folder / "README.md").is_file():
        write_eval_results(folder, ModelCard.load(folder / "README.md").data.eval_results or [],
                           source_url=f"https://huggingface.co/{repo_id}")


def update_model_card_results(checkpoint_dir, rows: Sequence[dict], dataset: str, pooling: str) -> ModelCard:
    """Add result rows to `<checkpoint_dir>/README.md` (created if missing): a new value replaces the old value
    of the same metric (same task, dataset, split and metric config); every other metric is kept."""
    checkpoint_dir = Path(checkpoint_dir)
    path = checkpoint_dir / "README.md"
    if path.is_file():
        card = ModelCard.load(path)
    else:
        card = ModelCard(f"---\n---\n\n# {checkpoint_dir.resolve().name}\n\n## Evaluation\n\n{RESULTS_START}\n{RESULTS_END}\n")
        card.data.pipeline_tag = "image-feature-extraction"
        card.data.library_name = "transformers"
    new = eval_results_from_rows(rows, dataset, pooling)
    kept = [old for old in (card.data.eval_results or []) if not any(_same_metric(old, n) for n in new)]
    card.data.eval_results = kept + new
    card.data.model_name = card.data.model_name or checkpoint_dir.resolve().name
    table = results_table(card.data.eval_results)
    text = card.text
    if RESULTS_START in text and RESULTS_END in text:
        head, rest = text.split(RESULTS_START, 1)
        text = f"{head}{RESULTS_START}\n{table}\n{RESULTS_END}{rest.split(RESULTS_END, 1)[1]}"
    else:
        text = f"{text.rstrip()}\n\n## Evaluation\n\n{RESULTS_START}\n{table}\n{RESULTS_END}\n"
    card = ModelCard(f"---\n{card.data.to_yaml()}\n---\n{text}")
    card.save(path)
    write_eval_results(checkpoint_dir, card.data.eval_results or [])
    return card


# our eval-results files in a repo: uploaded with the card, and deleted there when the folder no longer has them
_EVAL_RESULTS_PATTERN = f"{EVAL_RESULTS_FOLDER}/{EVAL_RESULTS_PREFIX}*.yaml"


def push_model_card(checkpoint_dir, repo_id: str) -> None:
    """Push `<checkpoint_dir>/README.md` and its eval-results files to the existing model repo `repo_id` (needs the
    network and a token)."""
    from huggingface_hub import HfApi

    checkpoint_dir = Path(checkpoint_dir)
    _eval_results_for_push(checkpoint_dir, repo_id)
    HfApi().upload_folder(folder_path=str(checkpoint_dir), repo_id=repo_id, commit_message="Update evaluation results",
                          allow_patterns=["README.md", _EVAL_RESULTS_PATTERN], delete_patterns=[_EVAL_RESULTS_PATTERN])


def render_encoder_card(encoder_dir, *, source: str, model_name: str | None = None, repo_id: str | None = None,
                        source_repo_id: str | None = None) -> ModelCard:
    """Write `<encoder_dir>/README.md` for a ViTModel export of `source` (modeling_attg_mae.export).

    `repo_id` / `source_repo_id`: the Hub repos of the encoder and of its vit_mae source, once pushed (the card then
    shows them instead of local paths and records the source as `base_model`).
    """
    encoder_dir = Path(encoder_dir)
    if not ENCODER_TEMPLATE_PATH.is_file():
        raise ValueError(f"model card template not found at {ENCODER_TEMPLATE_PATH}")
    config = _read_config(encoder_dir)
    if config.get("model_type") != "vit":
        raise ValueError(f"{encoder_dir} is not a ViTModel export (config.json model_type {config.get('model_type')!r})")
    size, patch = config["image_size"], config["patch_size"]
    size, patch = (size if isinstance(size, int) else size[0]), (patch if isinstance(patch, int) else patch[0])
    source_name = source_repo_id or source
    card_data = ModelCardData(
        pipeline_tag="image-feature-extraction",
        library_name="transformers",
        tags=list(dict.fromkeys([*DEFAULT_TAGS, "feature-extraction"])),
        base_model=source_repo_id,
        model_name=model_name or repo_id or encoder_dir.resolve().name,
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(ENCODER_TEMPLATE_PATH),
        model_name=model_name or repo_id or encoder_dir.resolve().name,
        repo_id=repo_id or str(encoder_dir),
        source=source_name,
        source_link=f"https://huggingface.co/{source_repo_id}" if source_repo_id else source_name,
        image_size=size,
        patch_size=patch,
        num_patches=(size // patch) ** 2,
        hidden_size=config["hidden_size"],
        num_layers=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"],
    )
    card.save(encoder_dir / "README.md")
    return card


def _upload(folder: Path, repo_id: str, private: bool, commit_message: str, ignore_patterns=None) -> str:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    _eval_results_for_push(folder, repo_id)
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message,
                               ignore_patterns=ignore_patterns, delete_patterns=[_EVAL_RESULTS_PATTERN])
    return str(getattr(commit, "commit_url", commit))


def push_encoder_to_hub(encoder_dir, repo_id: str, source_repo_id: str | None = None, private: bool = False) -> str:
    """Upload an export of modeling_attg_mae.export to its own repo (`<source repo>-encoder` by convention: the
    widget and `pipeline(repo)` need the model at a repo root). A ViTModel export's card is rendered again first,
    with the repo ids in place of local paths. Returns the commit URL."""
    from .output_folders import export_format_of

    encoder_dir = Path(encoder_dir)
    format = export_format_of(encoder_dir)
    if format is None:  # a foreign ViT folder: its README.md is not ours to rewrite, nor its weights ours to push
        raise ValueError(f"{encoder_dir} is not an encoder export of modeling_attg_mae.export (no config.json, or "
                         "not one the export writes)")
    if format == "hf":
        render_encoder_card(encoder_dir, source=source_repo_id or str(encoder_dir.parent), repo_id=repo_id,
                            source_repo_id=source_repo_id, model_name=repo_id.split("/")[-1])
    return _upload(encoder_dir, repo_id, private, "Upload encoder export (modeling_attg_mae.export)")


def push_checkpoint_to_hub(output_dir, repo_id: str, private: bool = False, commit_message: str = "Upload AttG-MAE checkpoint") -> str:
    """Create `repo_id` if needed and upload the checkpoint folder (weights, config, card). Returns the commit URL.

    An encoder export inside it (`<output_dir>/encoder`, modeling_attg_mae.export) goes to its own repo,
    `<repo_id>-encoder`, instead of a second copy of the weights in this one.
    """
    from .export import ENCODER_SUBFOLDER, export_format_of, hub_repo_id

    output_dir = Path(output_dir)
    if not (output_dir / "config.json").is_file():
        raise ValueError(f"{output_dir} is not a checkpoint folder (no config.json)")
    # only folders the export wrote go to their own repo; anything else named encoder/ stays part of the checkpoint
    exports = [name for format, name in ENCODER_SUBFOLDER.items() if export_format_of(output_dir / name) == format]
    url = _upload(output_dir, repo_id, private, commit_message, ignore_patterns=[f"{name}/*" for name in exports])
    for format, name in ENCODER_SUBFOLDER.items():
        if name in exports:
            push_encoder_to_hub(output_dir / name, hub_repo_id(repo_id, format), source_repo_id=repo_id, private=private)
    return url


def _markdown_table(values: dict) -> str:
    return "\n".join(["| setting | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in values.items())])


def render_fine_tuned_card(seed_dir, *, base_model: str, payload: dict, seed: int, repo_id: str) -> ModelCard:
    """Write `<seed_dir>/README.md` (and its eval-results files) for one seed of run_fine_tune: `base_model`, the
    recipe, the labelled subset, this seed's results (the card's metrics: they are these weights') and the mean
    over the run's seeds (in the text only: no model has those numbers)."""
    seed_dir = Path(seed_dir)
    own = [row for row in payload["results"] if row["seed"] == seed]
    summary = [row for row in payload["results"] if row["seed"] is None]
    if not own:
        raise ValueError(f"the fine-tuning results hold no rows of seed {seed}")
    first = own[0]
    subset = (f"{first['shots']} labelled images per class" if first.get("shots") else
              f"{100 * first['train_fraction']:g}% of the labels of the {payload['train_split']} split")
    # the seed's rows as the card's metrics, named as a run of one seed
    eval_results = eval_results_from_rows([{**row, "seed": None} for row in own], payload["dataset"], payload["pooling"])
    means = "\n".join(f"| {row['split']} | {row['top1']:.2f} ± {row['top1_std']:.2f} | {row['top5']:.2f} ± "
                      f"{row['top5_std']:.2f} | {row['num_seeds']} |" for row in summary)
    name = repo_id.split("/")[-1]
    card_data = ModelCardData(pipeline_tag="image-classification", library_name="transformers", model_name=name,
                              tags=list(dict.fromkeys([*DEFAULT_TAGS, "image-classification", "fine-tuned"])),
                              base_model=base_model, eval_results=eval_results or None)
    text = f"""---
{card_data.to_yaml()}
---

# {name}

[`{base_model}`](https://huggingface.co/{base_model}) fine-tuned for image classification on {payload['dataset']}
with MAE's fine-tuning recipe (`run_fine_tune.py` of attg-mae), seed {seed}: trained on {subset}
({first['num_train_images']} images), {payload['num_classes']} classes, {payload['pooling']} pooling.

```python
from transformers import pipeline

classifier = pipeline("image-classification", model="{repo_id}")
```

## Recipe

{_markdown_table(payload['recipe'])}

## Results

This model (seed {seed}):

{RESULTS_START}
{results_table(eval_results)}
{RESULTS_END}

Over the run's seeds (mean ± sample std; every seed is its own repo, none is picked by its score):

| split | top-1 (%) | top-5 (%) | seeds |
| --- | --- | --- | --- |
{means}
"""
    card = ModelCard(text)
    card.save(seed_dir / "README.md")
    write_eval_results(seed_dir, eval_results)
    return card


# a seed folder's training leftovers (Trainer checkpoints, TensorBoard logs, half-written files) stay local
_FINE_TUNE_PUSH_IGNORE = ["checkpoint-*", "runs/*", "*.partial"]


def push_fine_tuned_to_hub(seed_dir, repo_id: str, private: bool = False) -> str:
    """Upload one seed's fine-tuned classifier (weights, config, image processor, card, eval results, its
    seed_results.json record) to `repo_id`. Returns the commit URL."""
    seed_dir = Path(seed_dir)
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md"):
        if not (seed_dir / name).is_file():
            raise ValueError(f"{seed_dir} is not a finished fine-tuning seed (no {name})")
    return _upload(seed_dir, repo_id, private, "Upload fine-tuned classifier (run_fine_tune.py)",
                   ignore_patterns=list(_FINE_TUNE_PUSH_IGNORE))


__all__ = [
    "render_model_card",
    "update_model_card_results",
    "eval_results_from_rows",
    "push_model_card",
    "push_checkpoint_to_hub",
    "push_encoder_to_hub",
    "render_encoder_card",
    "render_fine_tuned_card",
    "push_fine_tuned_to_hub",
    "write_eval_results",
    "read_eval_results",
    "eval_result_entries",
    "DEFAULT_TAGS",
]
