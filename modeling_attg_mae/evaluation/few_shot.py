"""Few-shot subsets: N images per class, stratified and deterministic per seed (paper Tables 3 and 7)."""

from collections.abc import Sequence

import numpy as np
import torch


def sample_few_shot(labels: torch.Tensor | Sequence[int], shots: int, seed: int) -> torch.Tensor:
    """Indices of `shots` images of every class present in `labels`, drawn without replacement.

    The same `(labels, shots, seed)` always gives the same indices (a NumPy generator seeded with `seed`,
    classes visited in increasing order). Returned sorted, shape `(num_classes_present * shots,)`.
    A class with fewer than `shots` images is an error, not a silently smaller subset.
    """
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"labels must be a 1-D tensor of integer class ids, got {labels.dtype} {tuple(labels.shape)}")
    if int(shots) < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    rng = np.random.default_rng(int(seed))
    labels_np = labels.cpu().numpy()
    chosen = []
    for cls in np.unique(labels_np):
        members = np.flatnonzero(labels_np == cls)
        if members.size < shots:
            raise ValueError(f"class {int(cls)} has only {members.size} images, fewer than shots={shots}")
        chosen.append(rng.choice(members, size=int(shots), replace=False))
    return torch.from_numpy(np.sort(np.concatenate(chosen))).long()


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


__all__ = ["sample_few_shot", "mean_std"]
