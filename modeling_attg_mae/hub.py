"""Model cards and Hub export: render the card of a checkpoint, add evaluation results, push.

The card's metadata (`pipeline_tag: image-feature-extraction`, `library_name: transformers`, tags, datasets,
base_model, `model-index`) is written with `huggingface_hub.ModelCard`; the body comes from the template in
`model_cards/`. Every evaluation result is its own metric with its own `config` (e.g. "knn-k20-top1-cls"):
`model-index` groups results by task / dataset / split, and metrics without distinct configs are easy to
confuse or collapse when cards are merged on the Hub.
"""

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .package_files import packaged_path

# the repository's model_cards/ in a checkout; the copy shipped as modeling_attg_mae/model_cards in an installed wheel
TEMPLATE_PATH = packaged_path("model_cards", "attg_mae.md")
DEFAULT_TAGS = ("attg-mae", "mae", "vit", "self-supervised")
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
}


def _metric_config(row: dict, metric: str, pooling: str) -> str:
    parts = [row["method"].replace("_", "-")]
    if row.get("protocol") is not None:  # retrieval rows only: easy / medium / hard / same-label
        parts.append(row["protocol"].replace("_", "-"))
    if row.get("k") is not None:
        parts.append(f"k{row['k']}")
    if row.get("shots") is not None:
        parts.append(f"{row['shots']}shot")
    parts += [metric, pooling]
    if row.get("multi_scale"):  # retrieval rows only: a multi-scale result must not replace the single-scale one
        parts.append("ms")
    if row.get("crop_queries") is False:  # revisited rows only: whole query images are not the protocol's crops
        parts.append("whole")
    if row.get("image_size_is_default") is False:  # revisited rows only: another --image_size, another protocol
        parts.append(f"{row['image_size']}px")
    return "-".join(parts)


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
        dataset_split=row["split"],
        metric_type="map",
        metric_value=round(float(row["map"]), 2),
        metric_name=f"retrieval mAP ({', '.join(details)})",
        metric_config=_metric_config(row, "map", pooling),
    )


def _metric_name(row: dict, metric: str, pooling: str) -> str:
    details = [f"k={row['k']}" if row.get("k") is not None else None, f"{row['shots']}-shot" if row.get("shots") else None]
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
        if row.get("shots") is not None and row.get("seed") is not None:
            continue
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
    lines += [f"| {r.dataset_name} | {r.dataset_split} | {r.metric_name} | {r.metric_value:.2f} |" for r in eval_results]
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
        mask_ratio=config.get("mask_ratio", 0.75),
        image_size=config.get("image_size", 224),
        results_table=results_table(eval_results),
    )
    card.save(output_dir / "README.md")
    return card


def _same_metric(a: EvalResult, b: EvalResult) -> bool:
    return a.unique_identifier == b.unique_identifier and a.metric_config == b.metric_config


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
    return card


def push_model_card(checkpoint_dir, repo_id: str) -> None:
    """Push `<checkpoint_dir>/README.md` to the model repo `repo_id` (needs the network and a token)."""
    ModelCard.load(Path(checkpoint_dir) / "README.md").push_to_hub(repo_id, commit_message="Update evaluation results")


def push_checkpoint_to_hub(output_dir, repo_id: str, private: bool = False, commit_message: str = "Upload AttG-MAE checkpoint") -> str:
    """Create `repo_id` if needed and upload the checkpoint folder (weights, config, card). Returns the commit URL."""
    from huggingface_hub import HfApi

    output_dir = Path(output_dir)
    if not (output_dir / "config.json").is_file():
        raise ValueError(f"{output_dir} is not a checkpoint folder (no config.json)")
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(folder_path=str(output_dir), repo_id=repo_id, commit_message=commit_message)
    return str(getattr(commit, "commit_url", commit))


__all__ = [
    "render_model_card",
    "update_model_card_results",
    "eval_results_from_rows",
    "push_model_card",
    "push_checkpoint_to_hub",
    "DEFAULT_TAGS",
]
