"""What a finished run leaves for its users: the exported checkpoint, its k-NN results and its model card.

Apart from the run (wiring.py) because each piece is a product of the run, not a step of training: the export
must load in stock transformers (pipelines, `ViTMAEModel`), the k-NN reads that export back through the evaluation
code as `run_knn.py` would, and the card records the run's hyperparameters next to those results.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainingArguments
from transformers import ViTImageProcessorPil as ViTImageProcessor  # the same saved config, no torchvision needed

from ..data.arguments import convert_data_arguments
from ..data.loading import load_data_source
from ..modeling_attg_mae import save_for_inference_and_pretraining
from .arguments import DataArguments, ModelArguments, effective_batch_size


def run_image_processor(size: int, mean, std) -> ViTImageProcessor:
    """The run's image processor: saved with the export and into every checkpoint-N (the Trainer's
    processing_class)."""
    return ViTImageProcessor(size={"height": size, "width": size}, image_mean=list(mean), image_std=list(std),
                             resample=3)  # 3 = bicubic


def export_checkpoint(model, output_dir: Path, size: int, mean, std) -> None:
    """Safetensors weights (mask_ratio 0 for stock pipelines, see `save_for_inference_and_pretraining`) and an
    image processor, so that `pipeline("image-feature-extraction", model=output_dir)` works out of the box."""
    save_for_inference_and_pretraining(model, output_dir)
    run_image_processor(size, mean, std).save_pretrained(output_dir)
    from ..export import export_encoder  # + <output_dir>/encoder: a ViTModel with every token in order (the run's own)
    export_encoder(output_dir, overwrite=True)


def write_model_card(output_dir, model_args, data_args, attg_args, training_args, train_result) -> Path:
    from ..hub import render_model_card

    dataset = data_args.dataset_name or (data_args.train_dir and "imagefolder") or "attg-mae synthetic"
    render_model_card(
        output_dir,
        base_model=model_args.model_name_or_path,
        datasets=[data_args.dataset_name] if data_args.dataset_name else [],
        object_discovery={"method": data_args.attention_method,
                          "model": data_args.attention_model_name_or_path,
                          "grid_size": data_args.attention_grid_size},
        temperature={"start": attg_args.attg_temperature, "end": attg_args.attg_temperature_end,
                     "schedule": attg_args.attg_temperature_schedule, "guidance": attg_args.attg_guidance},
        training_hparams={
            "dataset": dataset, "learning_rate": training_args.learning_rate,
            "base_learning_rate": attg_args.base_learning_rate,
            "effective_batch_size": effective_batch_size(training_args),
            "num_processes": training_args.world_size,
            "epochs": training_args.num_train_epochs, "steps": train_result.global_step,
            "warmup_steps": training_args.warmup_steps,
            "weight_decay": training_args.weight_decay,
            "betas": [training_args.adam_beta1, training_args.adam_beta2],
            "lr_scheduler": str(training_args.lr_scheduler_type), "mask_ratio": model_args.mask_ratio,
            "norm_pix_loss": model_args.norm_pix_loss, "seed": training_args.seed,
            "final_train_loss": round(float(train_result.training_loss), 5),
        },
    )
    return Path(output_dir) / "README.md"


def run_knn_on_checkpoint(output_dir: Path, data_args: DataArguments, model_args: ModelArguments,
                          training_args: TrainingArguments) -> dict | None:
    """k-NN (DINO's weighted vote, k = 10 20 100 200 capped by the bank) of the saved encoder on every split
    but the training one; the results go into the model card. Runs on every process (features are sharded)."""
    from ..evaluation.arguments import EvalDataArguments, EvalModelArguments, EvalRunArguments, KNNArguments
    from ..evaluation.pipelines import run_knn

    dataset = load_data_source(data_args, model_args.cache_dir)
    bank_size = len(dataset[data_args.train_split])
    ks = [k for k in (10, 20, 100, 200) if k <= bank_size] or [bank_size]
    payload = run_knn(
        EvalModelArguments(model_name_or_path=str(output_dir), pooling="cls"),
        convert_data_arguments(data_args, EvalDataArguments),
        EvalRunArguments(output_dir=str(output_dir), feature_cache_dir=str(output_dir / "feature_cache"),
                         batch_size=training_args.per_device_eval_batch_size),
        KNNArguments(ks=ks),
        dataset=dataset,
    )
    return payload if training_args.process_index == 0 else None
