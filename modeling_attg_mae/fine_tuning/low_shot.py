"""Low-shot training subsets: a class-balanced fraction of the labels (paper Table 2: 1% and 10% of ImageNet) or N
images per class, both deterministic per seed. N per class is `evaluation.few_shot.sample_few_shot`, the one
few-shot sampler of the package; a fraction takes `evaluation.few_shot.per_class_count(n_c, fraction)`
(`max(1, round(fraction * n_c))`) images of every class c, the count of the probes' held-out slice."""

from __future__ import annotations

import numpy as np
import torch

from ..evaluation.few_shot import class_members, per_class_count, sample_few_shot


def sample_fraction(labels, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of `per_class_count(n_c, fraction)` images of every class present in `labels`, drawn without
    replacement by a NumPy generator seeded with `seed` (classes in increasing order)."""
    classes = class_members(labels)
    if not 0 < fraction <= 1:
        raise ValueError(f"--train_fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(int(seed))
    chosen = [rng.choice(members, size=per_class_count(members.size, fraction), replace=False)
              for _, members in classes]
    return torch.from_numpy(np.sort(np.concatenate(chosen))).long()


def check_shots(labels, shots: int, split: str) -> None:
    """`--shots_per_class shots` against the smallest class of `split`; the error names the class and its count."""
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long))
    present = counts[counts > 0]
    if shots > int(present.min()):
        smallest = int(torch.nonzero(counts == present.min())[0])
        raise ValueError(f"--shots_per_class {shots} needs {shots} images of every class, but class {smallest} has only "
                         f"{int(present.min())} in split {split!r}; pass --shots_per_class up to {int(present.min())}")


def low_shot_indices(labels, seed: int, train_fraction: float | None = None,
                     shots_per_class: int | None = None) -> torch.Tensor | None:
    """The training subset of one seed: `sample_fraction`, `sample_few_shot`, or None (every image)."""
    if shots_per_class is not None:
        return sample_few_shot(labels, shots_per_class, seed)
    if train_fraction is not None and train_fraction < 1:
        return sample_fraction(labels, train_fraction, seed)
    return None


__all__ = ["sample_fraction", "check_shots", "low_shot_indices"]
