#!/usr/bin/env python
"""Weighted k-NN evaluation (DINO's vote, several k) and few-shot k-NN of a frozen ViT, per eval split.

Single process (the embedded synthetic dataset by default):

    python run_knn.py --model_name_or_path outputs/demo --few_shot 1 5 10 20

Several processes (feature extraction is sharded and gathered; on GPUs drop ACCELERATE_USE_CPU):

    accelerate launch --multi_gpu --num_processes 8 run_knn.py --model_name_or_path facebook/vit-mae-large \\
        --dataset_name imagenet-1k --train_split train --eval_splits validation --ks 10 20 100 200
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 run_knn.py --model_name_or_path outputs/demo

or `python run_knn.py args.json` with the same fields. Results go to `<output_dir>/knn_results.json` (schema in
`modeling_attg_mae/evaluation/pipelines.py`) and into the checkpoint folder's README.md model card.
With `--save_embedding_plot` (needs `pip install 'attg-mae[plots]'`), also a t-SNE picture of each eval split's
features coloured by class, `<output_dir>/embedding.png` (`modeling_attg_mae/evaluation/embedding_plot.py`).
"""

from modeling_attg_mae.commands import KNN_ARGUMENTS as ARGUMENTS, knn as main  # the program: modeling_attg_mae/commands.py


if __name__ == "__main__":
    main()
