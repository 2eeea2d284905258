"""Model cards: rendered from model_cards/, parsed back by ModelCard.load, every metric kept."""

import json

import pytest
import yaml
from huggingface_hub import EvalResult, EvalResultEntry, ModelCard, parse_eval_result_entries

from modeling_attg_mae.hub import (
    EVAL_RESULTS_HEADER,
    eval_results_from_rows,
    push_checkpoint_to_hub,
    push_model_card,
    read_eval_results,
    render_model_card,
    update_model_card_results,
)


def _render(tmp_path, **kwargs):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit_mae", "image_size": 64, "mask_ratio": 0.75}))
    defaults = dict(
        base_model="facebook/vit-mae-base",
        datasets=["imagenet-1k"],
        object_discovery={"method": "tokencut", "model": "facebook/dino-vits16"},
        temperature={"start": 0.75, "end": 1.0, "schedule": "cosine"},
        training_hparams={"epochs": 800, "base_learning_rate": 1.5e-4},
        tags=["demo"],
    )
    return render_model_card(tmp_path, **{**defaults, **kwargs})


def _knn_row(split, k, top1, **extra):
    return {"method": "knn", "split": split, "k": k, "shots": None, "seed": None, "top1": top1, "top5": 90.0, **extra}


def test_rendered_card_has_metadata_and_sections(tmp_path):
    _render(tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.pipeline_tag == "image-feature-extraction"
    assert card.data.library_name == "transformers"
    assert card.data.tags == ["attg-mae", "mae", "vit", "self-supervised", "demo"]
    assert card.data.datasets == ["imagenet-1k"] and card.data.base_model == "facebook/vit-mae-base"
    for text in ("| method | tokencut |", "| schedule | cosine |", "| start | 0.75 |", "| base_learning_rate | 0.00015 |",
                 "random, ratio 0.75", "torch.randn(1, 3, 64, 64)"):
        assert text in card.text, text
    assert card.data.eval_results is None


def test_every_metric_survives_the_round_trip(tmp_path):
    rows = [_knn_row("validation", k, 50.0 + k) for k in (10, 20, 100, 200)]
    rows += [{"method": "knn_few_shot", "split": "validation", "k": 5, "shots": 1, "seed": s, "top1": 10.0 + s, "top5": 30.0}
             for s in (0, 1)]
    rows.append({"method": "knn_few_shot", "split": "validation", "k": 5, "shots": 1, "seed": None, "top1": 10.5,
                 "top5": 30.0, "top1_std": 0.7, "top5_std": 0.0, "num_seeds": 2})
    _render(tmp_path, results=rows, results_dataset="synthetic")
    card = ModelCard.load(tmp_path / "README.md")
    # 4 k x 2 + the few-shot mean x 2 (per-seed rows are not metrics of the card): all in one task/dataset/split
    got = {(r.metric_config, r.metric_value) for r in card.data.eval_results}
    expected = {(f"knn-k{k}-top1-cls", 50.0 + k) for k in (10, 20, 100, 200)}
    expected |= {(f"knn-k{k}-top5-cls", 90.0) for k in (10, 20, 100, 200)}
    expected |= {("knn-few-shot-k5-1shot-top1-cls", 10.5), ("knn-few-shot-k5-1shot-top5-cls", 30.0)}
    assert got == expected
    assert all(r.dataset_split == "validation" and r.task_type == "image-classification" for r in card.data.eval_results)
    assert "few-shot k-NN top-1 (k=5, 1-shot, mean of 2 seeds, cls pooling) | 10.50" in card.text


def test_update_replaces_same_metric_and_keeps_the_others(tmp_path):
    _render(tmp_path, results=[_knn_row("validation", 20, 60.0)], results_dataset="synthetic")
    update_model_card_results(tmp_path, [_knn_row("validation", 20, 61.0), _knn_row("validation_mixed_rand", 20, 40.0)],
                              dataset="synthetic", pooling="cls")
    update_model_card_results(tmp_path, [_knn_row("validation", 20, 55.0)], dataset="synthetic", pooling="mean")
    card = ModelCard.load(tmp_path / "README.md")
    values = {(r.dataset_split, r.metric_config): r.metric_value for r in card.data.eval_results}
    assert values == {
        ("validation", "knn-k20-top1-cls"): 61.0, ("validation", "knn-k20-top5-cls"): 90.0,
        ("validation_mixed_rand", "knn-k20-top1-cls"): 40.0, ("validation_mixed_rand", "knn-k20-top5-cls"): 90.0,
        ("validation", "knn-k20-top1-mean"): 55.0, ("validation", "knn-k20-top5-mean"): 90.0,
    }
    assert card.text.count("<!-- attg-mae:results:start -->") == 1 and "| 61.00 |" in card.text and "| 60.00 |" not in card.text
    assert "| method | tokencut |" in card.text  # the rest of the body is untouched


def _both_formats(folder) -> tuple[dict, dict]:
    """{(dataset, split, metric config): value} of the card's model-index and of its .eval_results files (these
    parsed by huggingface_hub's own parser, straight from the YAML)."""
    card = ModelCard.load(folder / "README.md")
    index = {(r.dataset_type, r.dataset_split, r.metric_config): r.metric_value for r in card.data.eval_results or []}
    files = {}
    for path in sorted((folder / ".eval_results").glob("attg-mae-*.yaml")):
        for entry in parse_eval_result_entries(yaml.safe_load(path.read_text())):
            split, config = entry.task_id.split("/")
            files[(entry.dataset_id, split, config)] = entry.value
    return index, files


def test_eval_results_files_hold_every_card_result_in_the_hubs_format(tmp_path):
    rows = [_knn_row("validation", 20, 60.0), _knn_row("validation_mixed_rand", 20, 40.0)]
    _render(tmp_path, results=rows, results_dataset="timm/imagenet-1k-wds")
    (path,) = (tmp_path / ".eval_results").iterdir()
    assert path.name == "attg-mae-timm_imagenet-1k-wds.yaml" and path.read_text().startswith(EVAL_RESULTS_HEADER)
    entries = parse_eval_result_entries(yaml.safe_load(path.read_text()))
    assert entries[0] == EvalResultEntry(dataset_id="timm/imagenet-1k-wds", task_id="validation/knn-k20-top1-cls",
                                         value=60.0, notes="k-NN top-1 (k=20, cls pooling)")
    assert all(type(e.value) is float and e.source_url is None for e in entries)
    index, files = _both_formats(tmp_path)
    assert files == index and len(files) == 4
    assert read_eval_results(tmp_path) == entries


def test_a_replaced_or_removed_result_leaves_no_stale_entry_in_either_format(tmp_path):
    _render(tmp_path, results=[_knn_row("validation", 20, 60.0)], results_dataset="synthetic")
    update_model_card_results(tmp_path, [_knn_row("validation", 20, 40.0)], dataset="other", pooling="cls")
    # the k-NN rerun with other numbers: one value per metric, the new one, in both
    update_model_card_results(tmp_path, [_knn_row("validation", 20, 61.5, top5=80.0)], dataset="synthetic", pooling="cls")
    index, files = _both_formats(tmp_path)
    assert index == files == {("synthetic", "validation", "knn-k20-top1-cls"): 61.5,
                              ("synthetic", "validation", "knn-k20-top5-cls"): 80.0,
                              ("other", "validation", "knn-k20-top1-cls"): 40.0,
                              ("other", "validation", "knn-k20-top5-cls"): 90.0}
    # a fresh card without the other dataset's results: its file goes; a file of the user's stays untouched
    (tmp_path / ".eval_results" / "mine.yaml").write_text("- dataset: {id: a/b, task_id: t}\n  value: 1\n")
    _render(tmp_path, results=[_knn_row("validation", 20, 62.0)], results_dataset="synthetic")
    index, files = _both_formats(tmp_path)
    assert not (tmp_path / ".eval_results" / "attg-mae-other.yaml").exists()
    assert (tmp_path / ".eval_results" / "mine.yaml").read_text().startswith("- dataset: {id: a/b")
    assert files == index and len(index) == 2


def test_a_users_file_of_our_name_is_refused_not_overwritten(tmp_path):
    (tmp_path / ".eval_results").mkdir()
    (tmp_path / ".eval_results" / "attg-mae-synthetic.yaml").write_text("# my own\n")
    with pytest.raises(ValueError, match="attg-mae-synthetic.yaml was not written by attg-mae"):
        _render(tmp_path, results=[_knn_row("validation", 20, 60.0)], results_dataset="synthetic")
    assert (tmp_path / ".eval_results" / "attg-mae-synthetic.yaml").read_text() == "# my own\n"


def test_the_card_and_its_eval_results_are_pushed_together_and_stale_files_deleted(tmp_path, local_hub):
    _render(tmp_path, results=[_knn_row("validation", 20, 60.0)], results_dataset="synthetic")
    update_model_card_results(tmp_path, [_knn_row("validation", 20, 40.0)], dataset="other", pooling="cls")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    push_checkpoint_to_hub(tmp_path, "you/run")
    repo = local_hub.repos["you/run"]
    assert set(repo) == {"README.md", "config.json", "model.safetensors", ".eval_results/attg-mae-synthetic.yaml",
                         ".eval_results/attg-mae-other.yaml"}
    pushed = parse_eval_result_entries(yaml.safe_load(repo[".eval_results/attg-mae-synthetic.yaml"].decode()))
    assert {(e.source_url, e.source_name) for e in pushed} == {("https://huggingface.co/you/run", "Model card")}
    # the card alone, after the other dataset's results went and a k-NN rerun: no stale file or entry in the repo
    _render(tmp_path, results=[_knn_row("validation", 20, 63.0)], results_dataset="synthetic")
    push_model_card(tmp_path, "you/run")
    assert set(repo) == {"README.md", "config.json", "model.safetensors", ".eval_results/attg-mae-synthetic.yaml"}
    pushed = parse_eval_result_entries(yaml.safe_load(repo[".eval_results/attg-mae-synthetic.yaml"].decode()))
    assert [(e.task_id, e.value) for e in pushed] == [("validation/knn-k20-top1-cls", 63.0),
                                                       ("validation/knn-k20-top5-cls", 90.0)]
    assert repo["README.md"] == (tmp_path / "README.md").read_bytes() and b"63.0" in repo["README.md"]


def test_update_creates_a_card_for_a_folder_without_one(tmp_path):
    update_model_card_results(tmp_path, [_knn_row("validation", 20, 60.0)], dataset="imagenet-1k", pooling="cls")
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.pipeline_tag == "image-feature-extraction" and len(card.data.eval_results) == 2


def test_eval_results_and_bad_input(tmp_path):
    results = eval_results_from_rows([_knn_row("validation", 20, 60.123)], "synthetic", "cls+mean")
    assert [r.metric_value for r in results] == [60.12, 90.0]
    assert results[0].metric_config == "knn-k20-top1-cls+mean"
    card = _render(tmp_path, results=[EvalResult(task_type="image-classification", dataset_type="d", dataset_name="d",
                                                   metric_type="accuracy", metric_value=1.0, metric_config="x")])
    assert len(card.data.eval_results) == 1
    with pytest.raises(ValueError, match="object_discovery must be a dict"):
        _render(tmp_path, object_discovery="tokencut")
    with pytest.raises(ValueError, match="results_dataset"):
        _render(tmp_path, results=[_knn_row("validation", 20, 60.0)])
    with pytest.raises(ValueError, match="not a folder"):
        render_model_card(tmp_path / "missing", object_discovery={}, temperature={}, training_hparams={})


def test_the_wheel_ships_the_card_template_and_the_metric_module(tmp_path):
    """A non-editable install has no repository around it: the root folders travel inside the package."""
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    # from a copy of the tracked files, as ci/test_wheel.sh builds: an in-tree build would reuse (and leave) build/lib
    source = tmp_path / "src"
    for name in subprocess.run(["git", "-C", str(repo), "ls-files", "-z"], check=True, capture_output=True,
                               text=True).stdout.split("\0"):
        if name and (repo / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("attg_mae-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "modeling_attg_mae/model_cards/attg_mae.md" in names
    assert "modeling_attg_mae/metrics/top_k_accuracy/top_k_accuracy.py" in names
    assert "modeling_attg_mae/modeling_attg_mae.py" in names and "modeling_attg_mae/object_discovery/tokencut.py" in names
    # every module of the checkout ships (a hand-written package list once left out pretraining/)
    shipped = {path.relative_to(repo).as_posix() for path in (repo / "modeling_attg_mae").rglob("*.py")}
    assert shipped and shipped <= names, sorted(shipped - names)
    entry_points = zipfile.ZipFile(wheel).read("attg_mae-0.1.0.dist-info/entry_points.txt").decode()
    assert "attg-mae-pretrain = modeling_attg_mae.commands:console.pretrain" in entry_points


def test_an_installed_package_reads_its_own_metric_and_card_copies(tmp_path, monkeypatch):
    # in a wheel install the folder above the package is site-packages, where an unrelated top-level metrics/ may be
    from modeling_attg_mae import package_files

    site = tmp_path / "site-packages"
    (site / "modeling_attg_mae" / "metrics" / "top_k_accuracy").mkdir(parents=True)
    (site / "metrics").mkdir()  # someone else's package
    monkeypatch.setattr(package_files, "_PACKAGE", site / "modeling_attg_mae")
    assert package_files.packaged_path("metrics") == site / "modeling_attg_mae" / "metrics"
    # a checkout has no copy inside the package: the repository's folder (reported by the caller when missing too)
    assert package_files.packaged_path("model_cards") == site / "model_cards"
