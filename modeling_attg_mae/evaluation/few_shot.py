"""Stratified subsets, deterministic per seed: few-shot subsets of N images per class (paper Tables 3 and 7) and
the held-out slice on which the linear probe picks its learning rate."""

from collections.abc import Sequence

import numpy as np
import torch


def class_members(labels: torch.Tensor | Sequence[int]) -> list[tuple[int, np.ndarray]]:
    """`(class id, its row indices)` of every class present in `labels`, classes in increasing order: what each
    stratified sampler here (and fine-tuning's `sample_fraction`) walks. `labels` must be 1-D integer class ids."""
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"labels must be a 1-D tensor of integer class ids, got {labels.dtype} {tuple(labels.shape)}")
    labels_np = labels.cpu().numpy()
    return [(int(cls), np.flatnonzero(labels_np == cls)) for cls in np.unique(labels_np)]


def sample_few_shot(labels: torch.Tensor | Sequence[int], shots: int, seed: int) -> torch.Tensor:
    """Indices of `shots` images of every class present in `labels`, drawn without replacement.

    The same `(labels, shots, seed)` always gives the same indices (a NumPy generator seeded with `seed`,
    classes visited in increasing order). Returned sorted, shape `(num_classes_present * shots,)`.
    A class with fewer than `shots` images is an error, not a silently smaller subset.
    """
    classes = class_members(labels)
    if int(shots) < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    rng = np.random.default_rng(int(seed))
    chosen = []
    for cls, members in classes:
        if members.size < shots:
            raise ValueError(f"class {cls} has only {members.size} images, fewer than shots={shots}")
        chosen.append(rng.choice(members, size=int(shots), replace=False))
    return torch.from_numpy(np.sort(np.concatenate(chosen))).long()


def per_class_count(num_images: int, fraction: float) -> int:
    """Images a class-balanced `fraction` takes of a class with `num_images`: `round(fraction * n)`, at least 1, so
    that every class is seen. The held-out slice of the probes and fine-tuning's `--train_fraction` both count so."""
    return max(1, round(fraction * num_images))


def held_out_split(labels: torch.Tensor | Sequence[int], fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(fit_indices, held_out_indices)`, both sorted: `per_class_count(n_c, fraction)` images of every class
    present in `labels` held out, drawn without replacement by a NumPy generator seeded with `seed`.

    A class left with no image to fit on is an error naming the class, not a probe that never sees it.
    """
    classes = class_members(labels)
    if not 0 < fraction < 1:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(int(seed))
    held = []
    for cls, members in classes:
        count = per_class_count(members.size, fraction)
        if count >= members.size:
            raise ValueError(
                f"held_out_fraction={fraction} leaves class {cls} ({members.size} images) with no training image; "
                f"every class needs at least 2 images for the held-out lr selection"
            )
        held.append(rng.choice(members, size=count, replace=False))
    held_idx = np.sort(np.concatenate(held))
    fit_idx = np.setdiff1d(np.arange(sum(members.size for _, members in classes)), held_idx)
    return torch.from_numpy(fit_idx).long(), torch.from_numpy(held_idx).long()


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


__all__ = ["class_members", "sample_few_shot", "per_class_count", "held_out_split", "mean_std"]
