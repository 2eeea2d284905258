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

from modeling_attg_mae.commands import RETRIEVAL_ARGUMENTS as ARGUMENTS, retrieval as main  # the program: modeling_attg_mae/commands.py


if __name__ == "__main__":
    main()
