#!/usr/bin/env python
"""Pre-train an Attention-Guided MAE (AttG-MAE) with the Hugging Face Trainer.

With no argument: the demo. A small AttG-MAE on the embedded synthetic data, on the CPU, in minutes, no network;
then a k-NN evaluation, and the paths of checkpoint, model card, TensorBoard logs and pictures.

    python run_pretrain.py
    python run_pretrain.py args.json                          # every argument from a JSON file
    python run_pretrain.py --output_dir out --num_train_epochs 5 --attention_method spectral_residual

Several processes (one per GPU; two CPU processes for testing):

    accelerate launch --num_processes 8 run_pretrain.py --dataset_name imagenet-1k ...
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 run_pretrain.py ...

`--learning_rate` defaults to base_learning_rate (1.5e-4) * effective batch / 256, MAE's rule; AdamW betas
(0.9, 0.95), weight decay 0.05 (not on biases and norms), warmup + cosine, mask ratio 0.75, norm_pix_loss.
`python run_pretrain.py --help` lists every argument.
"""

from modeling_attg_mae.commands import pretrain as main  # the program: modeling_attg_mae/commands.py


if __name__ == "__main__":
    main()
