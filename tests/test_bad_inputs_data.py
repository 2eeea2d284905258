"""Bad inputs of the data / evaluation / maps side (issue 9): what the user did, and the error they must get.

`CASES` is one table: `id`, `input` (what the user did), `message` (a regex the error must match), `error`
(its type), `before` (what must not have started when the error is raised: "features" = no feature extraction,
"data" = no dataset loaded or mapped, None = not applicable) and `run` (builds and runs the case). The
troubleshooting page (docs/TROUBLESHOOTING.md) is rendered from this table.
"""

import io
import json
import shutil
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import BertConfig, BertModel, ResNetConfig, ResNetModel

import run_knn
import run_linear_probe
import run_retrieval
from modeling_attg_mae.data import PretrainCollator, PretrainTransform
from modeling_attg_mae.data import loading as data_loading
from modeling_attg_mae.evaluation import runner, session
from modeling_attg_mae.evaluation.arguments import KNNArguments
from modeling_attg_mae.evaluation.pipelines import run_knn as knn_pipeline
from modeling_attg_mae.object_discovery import __main__ as maps_cli
from tests.conftest import colour_dataset, eval_arguments, image_folders, tiny_model


# ------------------------------------------------------------------------------------------------ builders


def _knn(ctx, dataset=None, knn=None, checkpoint=None, **overrides):
    model_args, data_args, run_args, _ = eval_arguments(checkpoint or ctx.checkpoint, ctx.tmp_path, **overrides)
    return knn_pipeline(model_args, data_args, run_args, knn or KNNArguments(ks=[3]),
                        dataset=colour_dataset() if dataset is None else dataset)


def _relabelled(feature, values):
    dataset = colour_dataset()
    train = dataset["train"].remove_columns("label").add_column("label", values(len(dataset["train"])))
    return datasets.DatasetDict({**dataset, "train": train.cast_column("label", feature)})


def _extra_validation_class(ctx):
    train_dir, val_dir = image_folders(ctx.tmp_path)  # classes r, g, b in both
    (val_dir / "p").mkdir()
    Image.new("RGB", (48, 40), (150, 40, 200)).save(val_dir / "p" / "0.png")
    return run_knn.main(["--model_name_or_path", str(ctx.checkpoint), "--train_dir", str(train_dir),
                         "--validation_dir", str(val_dir), "--output_dir", str(ctx.tmp_path / "out"),
                         "--cache_dir", str(ctx.tmp_path / "hf"), "--ks", "3"])


def _string_labels_with_an_extra_class():
    splits = {}
    for name, split in colour_dataset().items():
        names = ["rgb"[i] for i in split["label"]]
        if name == "validation":
            names[-1] = "purple"
        splits[name] = split.remove_columns("label").add_column("label", names)
    return datasets.DatasetDict(splits)


def _truncated_checkpoint(ctx):
    path = ctx.tmp_path / "truncated"
    shutil.copytree(ctx.checkpoint, path)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # an interrupted copy
    return _knn(ctx, checkpoint=path)


def _broken_jpeg(folder):
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 48, 3), 128, np.uint8)).save(buffer, format="JPEG")
    (folder / "broken.jpg").write_bytes(buffer.getvalue()[:300])  # header intact, data cut off
    return folder / "broken.jpg"


def _corrupt_jpeg_in_eval(ctx):
    train_dir, val_dir = image_folders(ctx.tmp_path)
    _broken_jpeg(train_dir / "g")
    model_args, data_args, run_args, _ = eval_arguments(ctx.checkpoint, ctx.tmp_path, train_dir=str(train_dir),
                                                        validation_dir=str(val_dir))
    model_args.cache_dir = str(ctx.tmp_path / "hf")
    return knn_pipeline(model_args, data_args, run_args, KNNArguments(ks=[3]))


def _corrupt_jpeg_in_pretraining(ctx):
    (ctx.tmp_path / "photos").mkdir()
    path = _broken_jpeg(ctx.tmp_path / "photos")
    collator = PretrainCollator(PretrainTransform(16, 8), require_attention_map=False)
    return collator([{"image": {"bytes": None, "path": str(path)}, "__index__": 7}])


def _corrupt_jpeg_in_maps(ctx):
    photos = _user_photos(ctx)
    _broken_jpeg(photos / "a")
    return maps_cli.main(["--method", "spectral_residual", "--train_dir", str(photos), "--output_dir",
                          str(ctx.tmp_path / "maps")])


def _json_args_file(ctx, main):
    (ctx.tmp_path / "args.json").write_text('{"model_name_or_path": "x",\n "ks": [3,]}')
    return main([str(ctx.tmp_path / "args.json")])


def _maps(ctx, *flags):
    return maps_cli.main([*flags, "--output_dir", str(ctx.tmp_path / "maps")])


def _user_photos(ctx):
    """A user's image folder (3 PNGs and a note): the maps CLI must never delete it."""
    folder = ctx.tmp_path / "photos"
    (folder / "a").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(folder / "a" / f"{i}.png")
    (folder / "notes.txt").write_text("mine")
    return folder


def _maps_onto(ctx, output_dir, *flags):
    photos = _user_photos(ctx)
    return maps_cli.main(["--method", "spectral_residual", "--train_dir", str(photos), "--output_dir",
                          str(output_dir(ctx, photos)), "--overwrite_output_dir", *flags])


def _earlier_maps_output_with_notes(ctx, photos):
    out = ctx.tmp_path / "maps"
    out.mkdir()
    (out / maps_cli.MARKER_FILE).write_text(json.dumps({"written_by": maps_cli.WRITTEN_BY}))
    (out / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    (out / "train").mkdir()
    (out / "notes.txt").write_text("mine")
    return out


def _saved_model(ctx, name, model):
    model.save_pretrained(ctx.tmp_path / name)
    return str(ctx.tmp_path / name)


def _flat_map_without_batch(ctx):
    model = tiny_model()
    size = model.config.image_size
    grid = size // model.config.patch_size
    return model(pixel_values=torch.zeros(2, 3, size, size), attention_map=torch.rand(grid, grid))


def _retrieval(ctx, *flags):
    return run_retrieval.main(["--model_name_or_path", str(ctx.checkpoint), "--output_dir", str(ctx.tmp_path / "out"),
                               "--feature_cache_dir", str(ctx.tmp_path / "cache"), *flags])


class _Evil:
    """A pickle payload: unpickling it would call os.system."""

    def __reduce__(self):
        import os

        return os.system, ("echo pwned",)


def _evil_gnd(ctx):
    import pickle

    path = ctx.tmp_path / "gnd_evil.pkl"
    path.write_bytes(pickle.dumps({"imlist": ["a"], "qimlist": ["q"], "gnd": [_Evil()]}))
    return _retrieval(ctx, "--gnd_file", str(path))


def _attentive(ctx, *flags):
    train_dir, val_dir = image_folders(ctx.tmp_path)
    return run_linear_probe.main(["--model_name_or_path", str(ctx.checkpoint), "--train_dir", str(train_dir),
                                  "--validation_dir", str(val_dir), "--output_dir", str(ctx.tmp_path / "out"),
                                  "--feature_cache_dir", str(ctx.tmp_path / "cache"), "--cache_dir",
                                  str(ctx.tmp_path / "hf"), *flags])


# ----------------------------------------------------------------------------------------------- the table

CASES = [
    dict(id="dataset-name-and-train-dir", input="`run_knn.py --dataset_name user/data --train_dir photos/` (two sources)",
         message=r"give either --dataset_name \('user/data'\) or --train_dir/--validation_dir \('photos/'/None\), not both",
         before="data", run=lambda ctx: run_knn.main(["--model_name_or_path", str(ctx.checkpoint), "--dataset_name",
                                                      "user/data", "--train_dir", "photos/"])),
    dict(id="synthetic-flag-with-a-dataset", input="`--synthetic_image_size 32` with `--dataset_name` (maps CLI; "
         "every CLI alike)",
         message=r"--synthetic_image_size only apply to the synthetic dataset, but --dataset_name or --train_dir was "
                 r"given as well", before="data",
         run=lambda ctx: _maps(ctx, "--dataset_name", "user/data", "--synthetic_image_size", "32")),
    dict(id="validation-dir-without-train-dir", input="`run_linear_probe.py --validation_dir val/` without `--train_dir`",
         message=r"--validation_dir 'val/' was given without --train_dir", before="data",
         run=lambda ctx: run_linear_probe.main(["--model_name_or_path", str(ctx.checkpoint), "--validation_dir", "val/"])),
    dict(id="synthetic-image-size-too-small", input="`--synthetic_image_size 8` (any CLI)",
         message=r"--synthetic_image_size must be an int >= 16 \(smaller objects lose their shape\), got 8",
         before="data", run=lambda ctx: _maps(ctx, "--synthetic_image_size", "8")),
    dict(id="eval-split-is-train-split", input="`run_knn.py --eval_splits train`",
         message=r"--eval_splits train includes the train split 'train'.*every query would find itself",
         before="features", run=lambda ctx: _knn(ctx, eval_splits=["train"])),
    dict(id="float-labels", input="a label column of floats (e.g. 0.0, 1.0, 2.7)",
         message=r"label_column 'label' in split 'train' has dtype float32, not integer class ids; store the class "
                 r"ids as integers or the class names as strings",
         before="features",
         run=lambda ctx: _knn(ctx, _relabelled(datasets.Value("float32"), lambda n: [i % 3 + 0.5 for i in range(n)]))),
    dict(id="validation-folder-class-not-in-train", input="`run_knn.py --train_dir train/ --validation_dir val/` "
         "where val/ has a class folder (p/) that train/ lacks",
         message=r"label_column 'label': split 'validation' holds class names that the train split 'train' lacks: "
                 r"'p' \(the train split's classes: \['b', 'g', 'r'\]\)\. Class ids are the train split's, matched by "
                 r"name", before="features", run=_extra_validation_class),
    dict(id="string-label-not-in-train", input="a label column of strings (encoded with the train split's sorted "
         "names, one mapping for every split) whose validation split has a name the train split lacks",
         message=r"split 'validation' holds class names that the train split 'train' lacks: 'purple'",
         before="features",
         run=lambda ctx: _knn(ctx, _string_labels_with_an_extra_class())),
    dict(id="k-larger-than-bank", input="`run_knn.py --ks 10 100` with a bank of 24 images",
         message=r"k=100 is larger than the k-NN bank \(24 train images in split 'train'\)", before="features",
         run=lambda ctx: _knn(ctx, knn=KNNArguments(ks=[10, 100]))),
    dict(id="few-shot-larger-than-a-class", input="`run_knn.py --few_shot 9` when a class has 8 bank images",
         message=r"--few_shot 9 needs 9 images of every class, but class 0 has only 8 in split 'train'",
         before="features", run=lambda ctx: _knn(ctx, knn=KNNArguments(ks=[3], few_shot=[9]))),
    dict(id="few-shot-k-larger-than-few-shot-bank", input="`run_knn.py --few_shot 1 --few_shot_k 5` with 3 classes",
         message=r"--few_shot_k 5 is larger than the 1-shot bank \(1 x 3 classes = 3 images\)", before="features",
         run=lambda ctx: _knn(ctx, knn=KNNArguments(ks=[3], few_shot=[1], few_shot_k=5))),
    dict(id="eval-model-path-missing", input="`run_knn.py --model_name_or_path ./no/such/dir`",
         message=r"--model_name_or_path './no/such/dir' does not exist \(no such local folder",
         before="features", run=lambda ctx: run_knn.main(["--model_name_or_path", "./no/such/dir"])),
    dict(id="eval-absolute-model-path-missing", input="`run_knn.py --model_name_or_path /tmp/missing`",
         message=r"--model_name_or_path '/.*/missing' does not exist", before="features",
         run=lambda ctx: run_knn.main(["--model_name_or_path", str(ctx.tmp_path / "missing")])),
    dict(id="truncated-safetensors", input="a truncated `model.safetensors` in the checkpoint folder (run_knn.py)",
         message=r"cannot load the weights of --model_name_or_path '.*truncated' \(.*truncated/model\.safetensors\)",
         before="features", run=lambda ctx: _truncated_checkpoint(ctx)),
    dict(id="corrupt-jpeg-in-evaluation", input="a truncated JPEG in the `--train_dir` image folder (run_knn.py)",
         message=r"cannot read the image in split 'train', row \d+ \(file .*/g/broken\.jpg\)",
         before=None, run=_corrupt_jpeg_in_eval),
    dict(id="corrupt-jpeg-in-pretraining", input="a truncated JPEG in pre-training (`--attg_guidance none`, the collator)",
         message=r"cannot read the image in row 7 \(file .*/photos/broken\.jpg\)", before=None,
         run=_corrupt_jpeg_in_pretraining),
    dict(id="corrupt-jpeg-in-maps", input="a truncated JPEG in the `--train_dir` image folder (maps CLI)",
         message=r"--train_dir .*photos: cannot read the image in split 'train', row \d+ \(file .*/a/broken\.jpg\)",
         before=None, run=_corrupt_jpeg_in_maps),
    dict(id="malformed-json-arguments-file-eval", input="`run_knn.py args.json` with a syntax error in args.json",
         message=r"arguments file .*args\.json is not valid JSON: .* at line 2, column 11", before=None,
         run=lambda ctx: _json_args_file(ctx, run_knn.main)),
    dict(id="malformed-json-arguments-file-maps", input="`python -m modeling_attg_mae.object_discovery args.json` "
         "with a syntax error in args.json",
         message=r"arguments file .*args\.json is not valid JSON: .* at line 2, column 11", before="data",
         run=lambda ctx: _json_args_file(ctx, maps_cli.main)),
    dict(id="malformed-method-kwargs", input="`--method_kwargs '{head: max}'` (maps CLI)",
         message=r"--method_kwargs '\{head: max\}' is not valid JSON: .* at line 1, column 2", before="data",
         run=lambda ctx: _maps(ctx, "--method", "dino", "--method_kwargs", "{head: max}")),
    dict(id="maps-batch-size-zero", input="`python -m modeling_attg_mae.object_discovery --batch_size 0`",
         message=r"--batch_size must be >= 1, got 0", before="data", run=lambda ctx: _maps(ctx, "--batch_size", "0")),
    dict(id="maps-num-proc-zero", input="`python -m modeling_attg_mae.object_discovery --num_proc 0`",
         message=r"--num_proc must be >= 1 \(or not given\), got 0", before="data",
         run=lambda ctx: _maps(ctx, "--num_proc", "0")),
    dict(id="maps-overwrite-input-folder", input="`--train_dir photos/ --output_dir photos/ --overwrite_output_dir` "
         "(maps CLI; also a folder above the input)",
         message=r"--output_dir .*photos is --train_dir .*photos or a folder above it: the output would replace its "
                 r"source", before="data", run=lambda ctx: _maps_onto(ctx, lambda ctx, photos: photos)),
    dict(id="maps-overwrite-foreign-folder", input="`--overwrite_output_dir` onto a non-empty folder that is not an "
         "earlier maps output (maps CLI)",
         message=r"--output_dir .*theirs holds something other than an earlier maps output \(no attg_mae_maps\.json "
                 r"of the maps CLI in it\); not replacing it even with --overwrite_output_dir", before="data",
         run=lambda ctx: _maps_onto(ctx, lambda ctx, photos: shutil.copytree(photos, ctx.tmp_path / "theirs"))),
    dict(id="maps-overwrite-output-with-user-files", input="`--overwrite_output_dir` onto an earlier maps output "
         "the user added files to (maps CLI)",
         message=r"holds something other than an earlier maps output \(notes\.txt is not a file the maps CLI "
                 r"writes\)", before="data",
         run=lambda ctx: _maps_onto(ctx, _earlier_maps_output_with_notes)),
    dict(id="maps-output-is-a-file", input="`--output_dir notes.txt` (a file) with `--overwrite_output_dir` (maps CLI)",
         message=r"--output_dir .*notes\.txt is a file, not a folder", before="data",
         run=lambda ctx: _maps_onto(ctx, lambda ctx, photos: photos / "notes.txt")),
    dict(id="gradcam-without-classification-head", input="`--method gradcam --model_name_or_path <a ResNetModel "
         "folder>` (no classification head)",
         message=r"--model_name_or_path '.*resnet_backbone' is a ResNetModel checkpoint without a classification "
                 r"head; .*ResNetForImageClassification checkpoint, e\.g\. microsoft/resnet-50", before="data",
         run=lambda ctx: _maps(ctx, "--method", "gradcam", "--model_name_or_path", _saved_model(
             ctx, "resnet_backbone", ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1]))))),
    dict(id="dino-given-a-bert", input="`--method dino --model_name_or_path <a BERT folder>`",
         message=r"--model_name_or_path '.*bert' is a 'bert' checkpoint; dino/tokencut need one of", before="data",
         run=lambda ctx: _maps(ctx, "--method", "dino", "--model_name_or_path", _saved_model(ctx, "bert", BertModel(
             BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8))))),
    dict(id="tokencut-given-a-resnet", input="`--method tokencut --model_name_or_path <a ResNet classifier folder>`",
         message=r"--model_name_or_path '.*resnet' is a 'resnet' checkpoint; dino/tokencut need one of", before="data",
         run=lambda ctx: _maps(ctx, "--method", "tokencut", "--model_name_or_path", ctx.detectors["resnet"])),
    dict(id="detector-path-missing", input="`--method tokencut --model_name_or_path ./no/such/detector`",
         message=r"--model_name_or_path './no/such/detector' does not exist", before="data",
         run=lambda ctx: _maps(ctx, "--method", "tokencut", "--model_name_or_path", "./no/such/detector")),
    dict(id="detector-hub-id-offline", input="`--method dino --model_name_or_path someone/detector` offline, not cached",
         message=r"--model_name_or_path 'attg-mae-tests/no-such-detector': cannot load a model config \(no local "
                 r"folder of that name, and the Hub id\)", before="data",
         run=lambda ctx: _maps(ctx, "--method", "dino", "--model_name_or_path", "attg-mae-tests/no-such-detector")),
    dict(id="attention-map-without-batch-dimension", input="a (4, 4) attention map of one image given to the model "
         "with a batch of 2", message=r"attention_map has shape \(4, 4\): pass \(batch, h, w\) — add a batch "
         r"dimension with map\[None\]", before=None, run=_flat_map_without_batch),
    dict(id="retrieval-gnd-file-missing", input="`run_retrieval.py --gnd_file data/gnd_roxford5k.pkl` (no such file)",
         message=r"ground-truth file .*gnd_roxford5k\.pkl does not exist", before="features",
         run=lambda ctx: _retrieval(ctx, "--gnd_file", str(ctx.tmp_path / "data" / "gnd_roxford5k.pkl"))),
    dict(id="retrieval-gnd-pickle-runs-code", input="`run_retrieval.py --gnd_file` a pickle that would call os.system",
         message=r"refusing to load .*gnd_evil\.pkl: it references the global (posix|os|nt)\.system", before="features",
         run=_evil_gnd),
    dict(id="retrieval-images-dir-without-gnd", input="`run_retrieval.py --images_dir jpg/` without `--gnd_file`",
         message=r"--images_dir / --dataset_label describe the revisited layout and need --gnd_file", before="features",
         run=lambda ctx: _retrieval(ctx, "--images_dir", str(ctx.tmp_path))),
    dict(id="attentive-probe-in-protocol-mode", input="`run_linear_probe.py --head attentive` (protocol mode, the default)",
         message=r"--head attentive .* pass --mode features", before="features",
         run=lambda ctx: _attentive(ctx, "--head", "attentive")),
    dict(id="attentive-heads-do-not-divide-width", input="`run_linear_probe.py --mode features --head attentive "
         "--attentive_num_heads 5` on a 32-wide encoder",
         message=r"--attentive_num_heads 5 does not divide the tokens' width 32 .*pass one of \[1, 2, 4, 8, 16, 32\]",
         before="features", run=lambda ctx: _attentive(ctx, "--mode", "features", "--head", "attentive",
                                                        "--attentive_num_heads", "5")),
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_bad_input(case, checkpoint, detector_checkpoints, tmp_path, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError(f"{case['id']}: {case['before']} work started before the error")

    if case["before"] == "features":
        monkeypatch.setattr(session, "extract_split_features", must_not_run)  # the labelled evaluations
        monkeypatch.setattr(runner, "extract_split_features", must_not_run)  # retrieval's revisited layout
    if case["before"] == "data":
        monkeypatch.setattr(maps_cli, "load_data_source", must_not_run)
        monkeypatch.setattr(data_loading, "load_data_source", must_not_run)  # the evaluations import it when run
        monkeypatch.setattr(datasets.Dataset, "map", must_not_run)
    monkeypatch.chdir(tmp_path)  # relative paths in the cases resolve inside the test's folder
    ctx = SimpleNamespace(checkpoint=checkpoint, detectors=detector_checkpoints, tmp_path=tmp_path)
    with pytest.raises(case.get("error", ValueError), match=case["message"]):
        case["run"](ctx)


def test_cases_are_documentable():
    """Every case has what the troubleshooting page renders, and ids are unique."""
    assert len({case["id"] for case in CASES}) == len(CASES)
    for case in CASES:
        assert case["input"] and case["message"] and case["before"] in (None, "features", "data")
        json.dumps({k: case[k] for k in ("id", "input", "message", "before")})
