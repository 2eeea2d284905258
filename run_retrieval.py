#!/usr/bin/env python
"""Image retrieval (DINO's protocol, revisitop's mAP / mP@k) of a frozen ViT.

The revisited Oxford / Paris layout (Easy / Medium / Hard; queries cropped to their box):

    python run_retrieval.py --model_name_or_path outputs/demo --gnd_file data/roxford5k/gnd_roxford5k.pkl --multi_scale

(`--images_dir` defaults to the gnd file's folder, or its `jpg/`; a JSON conversion of the gnd file works the
same: `python -m modeling_attg_mae.evaluation.retrieval convert-gnd gnd_roxford5k.pkl gnd_roxford5k.json`.)

Any labelled dataset (train split = database, every eval split = queries, positives = same label); the embedded
synthetic dataset, or the checkpoint's pre-training data, by default:

    python run_retrieval.py --model_name_or_path outputs/demo --pooling gem

Several processes (feature extraction is sharded and gathered; on GPUs drop ACCELERATE_USE_CPU):

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 run_retrieval.py --model_name_or_path outputs/demo

or `python run_retrieval.py args.json` with the same fields. Results go to `<output_dir>/retrieval_results.json`
(schema in `modeling_attg_mae/evaluation/retrieval.py`) and, as mAP, into the checkpoint folder's model card.
"""

from modeling_attg_mae.cli import parse_cli
from modeling_attg_mae.evaluation.arguments import EvalDataArguments, EvalModelArguments, EvalRunArguments, RetrievalArguments
from modeling_attg_mae.evaluation.retrieval import print_retrieval_summary, run_retrieval


# the argument groups, in parsing order (the data flags: the shared `modeling_attg_mae.data.arguments` ones)
ARGUMENTS = (EvalModelArguments, EvalDataArguments, EvalRunArguments, RetrievalArguments)


def main(argv=None):
    model_args, data_args, run_args, retrieval_args = parse_cli(ARGUMENTS, argv)
    payload = run_retrieval(model_args, data_args, run_args, retrieval_args)
    print_retrieval_summary(payload)
    return payload


if __name__ == "__main__":
    main()
