"""benchmarks/attg_vs_mae.py, the paired study, without training (issue 20, items 6 and 14): which runs it starts,
which records it trusts, where it writes, and what it says when a run fails. `_train` and `make_record` are
replaced by fakes that note the run; run_pretrain.py's own parser and checks are the real ones."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks import attg_vs_mae as study
from tests.conftest import REPO, image_folders

COMMITTED = REPO / "docs" / "results"


@pytest.fixture
def runs(monkeypatch):
    """The (output_dir, argv) of every run the study starts; each writes a small record."""
    started = []

    def fake_train(argv, log_path):
        started.append((argv[argv.index("--output_dir") + 1], argv))

    def fake_record(setting, seed, arm, argv, output_dir, seconds):
        return {"schema_version": 1, "setting": setting, "seed": seed, "arm": arm, "argv": argv,
                "knn": {"cls": {}}, "wall_seconds": 0.0}

    def fake_baselines(setting, seed, argv, output_dir):  # no training: not one of the runs
        return {"schema_version": 1, "setting": setting, "seed": seed, "arm": study.BASELINES, "argv": argv,
                "training_free": {}, "random_init": {"knn": {}}}

    monkeypatch.setattr(study, "_train", fake_train)
    monkeypatch.setattr(study, "make_record", fake_record)
    monkeypatch.setattr(study, "make_baselines_record", fake_baselines)
    return started


def _committed_state():
    return sorted((str(p), p.read_bytes()) for p in COMMITTED.rglob("*.json"))


# --------------------------------------------------------------------------------- item 6: a study on your data

def test_a_study_on_your_own_data_trains_and_writes_its_records_outside_docs(tmp_path, runs, monkeypatch):
    train, val = image_folders(tmp_path)
    monkeypatch.chdir(tmp_path)  # the default records folder is relative, like --work
    before = _committed_state()
    study.main(["--seeds", "0", "--arms", "none", "attg", "--", "--train_dir", str(train), "--validation_dir",
                str(val), "--attention_method", "spectral_residual"])
    # both arms trained (they used to be skipped: the shipped synthetic records in docs/ were taken as the answer)
    assert [Path(out).name for out, _ in runs] == ["seed0-none", "seed0-attg"]
    records = tmp_path / "outputs" / "study" / "records" / "main"
    # the seed's training-free baselines and random initialisation come with it, in a record of their own
    assert sorted(p.name for p in records.iterdir()) == ["seed0-attg.json", "seed0-baselines.json", "seed0-none.json"]
    baselines = json.loads((records / "seed0-baselines.json").read_text())
    assert baselines["arm"] == study.BASELINES and "--attention_method" in baselines["argv"]
    assert _committed_state() == before
    for _, argv in runs:  # the synthetic data's map source (its object masks) is not carried onto these images
        assert "object_mask" not in argv and "column" not in argv
        assert argv[argv.index("--attention_method") + 1] == "spectral_residual"
        assert "--attention_grid_size" not in argv and not any(flag.startswith("--synthetic") for flag in argv)
    # a second call finds its own records, made with these arguments: nothing reruns
    runs.clear()
    study.main(["--seeds", "0", "--arms", "none", "attg", "--", "--train_dir", str(train), "--validation_dir",
                str(val), "--attention_method", "spectral_residual"])
    assert runs == []


def test_a_new_synthetic_setting_writes_its_records_outside_docs(tmp_path, runs, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = _committed_state()
    study.main(["--setting", "longer", "--seeds", "0", "--arms", "none", "--", "--num_train_epochs", "20"])
    assert len(runs) == 1 and (tmp_path / "outputs" / "study" / "records" / "longer" / "seed0-none.json").is_file()
    assert _committed_state() == before and not (COMMITTED / "attg_vs_mae" / "longer").exists()


def test_your_own_data_needs_your_map_source(tmp_path, runs):
    train, val = image_folders(tmp_path)
    with pytest.raises(ValueError, match=r"arms none, attg take their maps from the run's map source.*pass "
                                         r"--attention_method .* after --.*column on object_mask.*synthetic"):
        study.main(["--seeds", "0", "--records", str(tmp_path / "records"), "--", "--train_dir", str(train),
                    "--validation_dir", str(val)])
    assert runs == []
    # the label-free arms bring their own map source: a study of those alone needs none from the user
    study.main(["--seeds", "0", "--arms", "self", "--records", str(tmp_path / "records"), "--work",
                str(tmp_path / "work"), "--", "--train_dir", str(train), "--validation_dir", str(val)])
    (_, argv), = runs
    assert argv[argv.index("--attention_method") + 1] == "self" and "object_mask" not in argv


def test_a_maps_cli_output_brings_its_maps(tmp_path, runs):
    from modeling_attg_mae.object_discovery.__main__ import main as maps_cli

    train, _ = image_folders(tmp_path)
    maps_cli(["--method", "spectral_residual", "--train_dir", str(train), "--grid_size", "4", "--output_dir",
              str(tmp_path / "maps")])
    study.main(["--seeds", "0", "--arms", "none", "--records", str(tmp_path / "records"), "--work",
                str(tmp_path / "work"), "--", "--dataset_name", str(tmp_path / "maps")])
    assert len(runs) == 1 and "--attention_method" not in runs[0][1]  # its attention_map column is used


def test_a_record_made_with_other_arguments_is_refused_naming_the_difference(tmp_path, runs):
    records = tmp_path / "records" / "main"
    records.mkdir(parents=True)
    for arm in ("none", "attg"):  # the committed synthetic records: made without --synthetic_object_color
        shutil.copy(COMMITTED / "attg_vs_mae" / "main" / f"seed0-{arm}.json", records)
    with pytest.raises(ValueError, match=r"seed0-none\.json was made with other arguments than this run: "
                                         r"--synthetic_object_color: 'random' here, not given in the record\. "
                                         r"Choose another --setting or --records <folder>.*--overwrite"):
        study.main(["--seeds", "0", "--records", str(tmp_path / "records"), "--", "--synthetic_object_color",
                    "random"])
    assert runs == []
    with pytest.raises(ValueError, match=r"--learning_rate: '0\.001' here, '0\.0015' in the record"):
        study.main(["--seeds", "0", "--records", str(tmp_path / "records"), "--", "--learning_rate", "0.001"])
    assert runs == []


def test_a_record_without_its_run_arguments_is_refused(tmp_path, runs):
    records = tmp_path / "records" / "main"
    records.mkdir(parents=True)
    (records / "seed0-none.json").write_text(json.dumps({"seed": 0, "arm": "none", "knn": {}}))
    with pytest.raises(ValueError, match=r"seed0-none\.json has no run arguments \(argv\)"):
        study.main(["--seeds", "0", "--arms", "none", "--records", str(tmp_path / "records")])
    assert runs == []


@pytest.mark.parametrize("argv", [
    ["--setting", "main"],  # make study
    ["--setting", "shape", "--", "--synthetic_object_color", "random"],
    ["--setting", "main", "--records", "docs/results/label_free", "--work", "outputs/label_free",  # make study-label-free
     "--arms", "none", "self", "online_sr", "sr"],
    ["--setting", "hue_pilot", "--seeds", "0", "1", "2", "--records", "docs/results/object_hue", "--work",  # its pilot
     "outputs/object_hue", "--arms", "none", "attg", "permuted", "centre", "sr", "--", "--synthetic_class_cue", "hue",
     "--synthetic_background_palette", "vivid"],
], ids=["main", "shape", "label-free", "object-hue-pilot"])
def test_the_committed_records_are_those_of_the_committed_commands(argv, runs, monkeypatch):
    monkeypatch.chdir(REPO)  # as the Makefile runs them
    before = _committed_state()
    study.main(argv)
    assert runs == [] and _committed_state() == before


# ------------------------------------------------------------------------- item 14: failures that say why, early

def test_a_failed_run_says_why_in_the_error(tmp_path, monkeypatch):
    log = tmp_path / "seed0-none" / "train.log"

    def fake_run(command, stdout, **kwargs):
        stdout.write("loading the data\n"
                     "Traceback (most recent call last):\n  File \"run_pretrain.py\", line 9, in <module>\n"
                     "    main()\nKeyError: 'image'\n\nThe above exception was the direct cause of the following "
                     "exception:\n\nTraceback (most recent call last):\n  File \"run_pretrain.py\", line 12, in "
                     "<module>\n    raise ValueError(...)\n    ^^^^^^^^^^^^^^^^^^^^^^\nValueError: image_column "
                     "'image' not found in split 'train'; the dataset has columns ['img', 'label']\n")
        return subprocess.CompletedProcess(command, 1)

    monkeypatch.setattr(study.subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match=r"(?s)run_pretrain\.py failed \(exit 1\): ValueError: image_column 'image' "
                                           r"not found in split 'train'; the dataset has columns \['img', 'label'\]"
                                           r"\n.*full log: .*train\.log") as caught:
        study._train(["--output_dir", str(tmp_path)], log)
    assert "KeyError" not in str(caught.value)  # the last exception, not the chain


def test_a_failure_without_a_traceback_shows_the_log_tail(tmp_path, monkeypatch):
    def fake_run(command, stdout, **kwargs):
        stdout.write("".join(f"step {i}\n" for i in range(30)) + "Killed\n")
        return subprocess.CompletedProcess(command, -9)

    monkeypatch.setattr(study.subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match=r"(?s)failed \(exit -9\); the end of its log:\n.*step 29\n\s*Killed"):
        study._train([], tmp_path / "train.log")


def test_a_misspelt_arm_is_refused_before_any_run(tmp_path, runs):
    with pytest.raises(ValueError, match=r"--arms: unknown arm 'atg'; choose from .*'attg'.*'self'"):
        study.main(["--seeds", "0", "--arms", "none", "atg", "--records", str(tmp_path / "records"), "--work",
                    str(tmp_path / "work")])
    assert runs == []


def test_every_arm_is_checked_by_run_pretrains_parser_before_any_run(tmp_path, runs):
    # --attention_warmup_epochs suits the self arm, but run_pretrain.py refuses it for MAE's (column maps): the
    # error must come before the self arm trains, not after
    with pytest.raises(ValueError, match=r"arm none \(seed 0\): .*--attention_warmup_epochs is for --attention_method "
                                         r"self"):
        study.main(["--seeds", "0", "--arms", "self", "none", "--records", str(tmp_path / "records"), "--work",
                    str(tmp_path / "work"), "--", "--attention_warmup_epochs", "1"])
    assert runs == []
    assert not (tmp_path / "work").exists()  # checking made no run folder
