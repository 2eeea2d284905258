"""Accuracy through `evaluate`, with the metric module loaded from the repository's `metrics/` folder.

`evaluate.load("accuracy")` downloads its module from the Hub and fails offline; a module loaded by local
path does not.
"""

from functools import lru_cache

import torch

from ..package_files import packaged_path

# the repository's metrics/ in a checkout; the copy shipped as modeling_attg_mae/metrics in an installed wheel
METRICS_DIR = packaged_path("metrics")


@lru_cache(maxsize=None)
def load_local_metric(name: str):
    """`evaluate.load` of `metrics/<name>/<name>.py` (offline)."""
    import evaluate

    path = METRICS_DIR / name / f"{name}.py"
    if not path.is_file():
        raise ValueError(f"metric module {name!r} not found at {path}; the repository's metrics/ folder is needed")
    return evaluate.load(str(path.parent))


def top_k_accuracy(ranked: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """`{"top1": ..., "top5": ...}` in [0, 1] from ranked class ids `(Q, R)` and true labels `(Q,)`."""
    if ranked.dim() != 2 or labels.dim() != 1 or ranked.shape[0] != labels.shape[0]:
        raise ValueError(
            f"ranked must be (Q, R) and labels (Q,) with the same Q, got {tuple(ranked.shape)} and {tuple(labels.shape)}"
        )
    metric = load_local_metric("top_k_accuracy")
    return metric.compute(predictions=ranked.tolist(), references=labels.tolist(), k=list(ks))


__all__ = ["load_local_metric", "top_k_accuracy", "METRICS_DIR"]
