"""DINO's weighted k-NN classifier (Caron et al., 2021, `eval_knn.py`), several k at once, in bounded memory.

Features are L2-normalised, so the dot product is the cosine similarity. Each query takes its k most similar
bank features; neighbour j votes for its class with weight `exp(sim_j / T)` (T = 0.07); classes are ranked by
their summed votes. One top-k with the largest k serves every smaller k, because `topk` returns neighbours
sorted by similarity. Queries are processed in chunks so that the similarity block `(chunk, M)` stays under
`max_chunk_bytes`: a 1.28M-image bank needs no more memory than the bank itself plus that block.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

DEFAULT_KS = (10, 20, 100, 200)
DEFAULT_TEMPERATURE = 0.07


def _check_features(name: str, features: torch.Tensor) -> None:
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"{name} must be a tensor of shape (num_images, dim), got {shape}")
    if not features.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {features.dtype}")


def _check_labels(name: str, labels: torch.Tensor, num_rows: int, features_name: str) -> None:
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor of class ids")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class ids, got {labels.dtype}")
    if labels.shape[0] != num_rows:
        raise ValueError(f"{name} has {labels.shape[0]} entries but {features_name} has {num_rows} rows")
    if num_rows and int(labels.min()) < 0:
        raise ValueError(f"{name} must be >= 0, got {int(labels.min())}")


def check_temperature(temperature: float) -> None:
    """T of the vote weight must be > 0 (0 gives inf weights, a negative T votes for the farthest neighbours).

    Called by `knn_classify` (a public entry point: benchmarks, the online monitor) and by `KNNArguments` (the CLI's
    boundary, before any model is loaded): one rule, one message."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def knn_classify(
    bank_features: torch.Tensor,
    bank_labels: torch.Tensor,
    query_features: torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    temperature: float = DEFAULT_TEMPERATURE,
    num_classes: int | None = None,
    num_ranked: int = 5,
    chunk_size: int | None = None,
    max_chunk_bytes: int = 256 * 2**20,
    progress: bool = False,
) -> dict[int, torch.Tensor]:
    """Rank classes for every query by DINO's weighted vote of its k nearest bank features.

    Args:
        bank_features: `(M, D)` features of the labelled bank (the train split). Need not be normalised.
        bank_labels: `(M,)` integer class ids.
        query_features: `(Q, D)` features to classify.
        ks: the numbers of neighbours to report; each must be in [1, M].
        temperature: T in the vote weight `exp(cosine / T)`.
        num_classes: C; defaults to `max(bank_labels) + 1`.
        num_ranked: how many classes to rank per query (5 gives top-1 and top-5).
        chunk_size: queries per similarity block; by default as many as fit in `max_chunk_bytes`.
    Returns:
        `{k: LongTensor (Q, min(num_ranked, C))}`: class ids ranked best first, for every k.
    """
    _check_features("bank_features", bank_features)
    _check_features("query_features", query_features)
    _check_labels("bank_labels", bank_labels, bank_features.shape[0], "bank_features")
    num_bank, dim = bank_features.shape
    if query_features.shape[1] != dim:
        raise ValueError(f"query_features have dim {query_features.shape[1]} but bank_features have dim {dim}")
    if num_bank == 0:
        raise ValueError("the k-NN bank is empty (bank_features has 0 rows)")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    if ks[-1] > num_bank:
        raise ValueError(f"k={ks[-1]} is larger than the k-NN bank ({num_bank} features); choose k <= {num_bank}")
    check_temperature(temperature)
    max_label = int(bank_labels.max()) + 1
    num_classes = max_label if num_classes is None else int(num_classes)
    if num_classes < max_label:
        raise ValueError(f"num_classes={num_classes} but bank_labels contain class id {max_label - 1}")
    num_ranked = min(int(num_ranked), num_classes)
    if chunk_size is None:
        chunk_size = max(1, max_chunk_bytes // (num_bank * bank_features.element_size()))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    bank = F.normalize(bank_features, dim=1)
    bank_t = bank.t().contiguous()  # (D, M): the matmul then reads the bank once per chunk, contiguously
    bank_labels = bank_labels.to(bank.device)
    k_max = ks[-1]
    num_queries = query_features.shape[0]
    ranked = {k: torch.empty(num_queries, num_ranked, dtype=torch.long) for k in ks}
    starts = range(0, num_queries, chunk_size)
    for start in tqdm(starts, desc="k-NN", unit="chunk", disable=not progress):
        queries = F.normalize(query_features[start : start + chunk_size].to(bank.device, bank.dtype), dim=1)
        similarity = queries @ bank_t  # (c, M)
        top_sim, top_idx = similarity.topk(k_max, dim=1, largest=True, sorted=True)  # (c, k_max)
        del similarity
        neighbour_labels = bank_labels[top_idx]  # (c, k_max)
        weights = (top_sim / temperature).exp()  # (c, k_max)
        for k in ks:
            votes = torch.zeros(queries.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
            votes.scatter_add_(1, neighbour_labels[:, :k], weights[:, :k])  # (c, C)
            ranked[k][start : start + queries.shape[0]] = votes.topk(num_ranked, dim=1).indices.cpu()
    return ranked


def nearest_neighbours(bank_features: torch.Tensor, query_features: torch.Tensor, k: int):
    """The `k` most similar bank features of each query by the cosine similarity of `knn_classify`, best first:
    `(similarities (Q, k), bank indices (Q, k))`. For showing the neighbours themselves (the demo app); the vote
    over their labels is `knn_classify`'s."""
    _check_features("bank_features", bank_features)
    _check_features("query_features", query_features)
    if not 1 <= k <= bank_features.shape[0]:
        raise ValueError(f"k={k} must be in [1, {bank_features.shape[0]}] (the bank's size)")
    similarity = F.normalize(query_features, dim=1) @ F.normalize(bank_features, dim=1).t()  # (Q, M)
    return similarity.topk(k, dim=1, largest=True, sorted=True)


__all__ = ["knn_classify", "nearest_neighbours", "check_temperature", "DEFAULT_KS", "DEFAULT_TEMPERATURE"]
