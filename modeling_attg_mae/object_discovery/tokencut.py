"""`tokencut`: normalized cut on the last block's keys (TokenCut, Wang et al. 2022; paper Sec. 3.3, Table 9).

Exactly the official algorithm (defaults tau = 0.2, eps = 1e-5), batched on the detector's device:

1. features F: keys of the last block, heads concatenated, CLS/registers dropped, each token L2-normalised;
2. graph: A = F F^T, W = 1 where A > tau else eps; D = diag(row sums of W);
3. the generalized problem (D - W) y = lambda D y, through its symmetric form
   D^-1/2 (D - W) D^-1/2 u = lambda u (same eigenvalues, y = D^-1/2 u), one `torch.linalg.eigh` on the
   whole (B, N, N) batch; y = the eigenvector of the second-smallest eigenvalue;
4. bipartition y > mean(y); seed = argmax |y|; if the seed is not in the partition, flip y and the partition;
5. keep the 4-connected component of the partition that contains the seed (batched flood fill).

Tie rule: tokens with y exactly equal to mean(y) are assigned as in the official code, i.e. outside the
partition when the seed's side is above the mean and inside it when the partition was flipped. An
eigenvector's sign is arbitrary, so two solvers can disagree on such (measure-zero) exact ties only.
"""

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from ..configuration_attg_mae import patch_size_of
from .dino import (
    DetectorDtype,
    VIT_DETECTORS,
    check_image_size,
    check_vit_detector,
    last_block_query_key,
    load_vit_detector,
    num_prefix_tokens,
)
from .preprocessing import IMAGENET_MEAN, IMAGENET_STD
from .registry import DetectorMethod, register

TokenCutOutput = Literal["component", "eigenvector"]


def second_eigenvector(features: torch.Tensor, tau: float = 0.2, eps: float = 1e-5) -> torch.Tensor:
    """Second-smallest generalized eigenvector of (D - W) y = lambda D y for every image, `(B, N)` float32.

    Args:
        features: `(B, N, D)` token features (L2-normalised here).
    """
    if features.dim() != 3:
        raise ValueError(f"features must have shape (B, N, D), got {tuple(features.shape)}")
    if features.shape[1] < 2:
        raise ValueError(f"a normalized cut needs at least 2 tokens, got {features.shape[1]}")
    features = F.normalize(features.float(), dim=-1)
    similarity = features @ features.transpose(1, 2)  # (B, N, N) cosine
    weights = torch.where(similarity > tau, 1.0, eps)  # binary graph; eps keeps it connected
    inv_sqrt_degree = weights.sum(dim=-1).rsqrt()  # (B, N)
    # I - D^-1/2 W D^-1/2: symmetric, so eigh applies and every image is solved in one batched call
    laplacian = -inv_sqrt_degree[:, :, None] * weights * inv_sqrt_degree[:, None, :]
    laplacian.diagonal(dim1=1, dim2=2).add_(1.0)
    _, eigenvectors = torch.linalg.eigh(laplacian)  # ascending eigenvalues
    return inv_sqrt_degree * eigenvectors[:, :, 1]  # y = D^-1/2 u, (B, N)


def seed_component(partition: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """4-connected component of `partition` `(B, h, w)` bool that contains the flat index `seed` `(B,)`.

    Batched flood fill: grow the seed by one step in the four directions, restricted to the partition, until
    nothing changes (at most h * w steps; convergence is checked every max(h, w) steps to spare syncs).
    """
    batch, height, width = partition.shape
    component = torch.zeros_like(partition).view(batch, -1)
    component.scatter_(1, seed[:, None], True)
    component = component.view(batch, height, width) & partition
    check_every = max(height, width)
    for step in range(height * width):
        grown = component.clone()
        grown[:, 1:] |= component[:, :-1]
        grown[:, :-1] |= component[:, 1:]
        grown[:, :, 1:] |= component[:, :, :-1]
        grown[:, :, :-1] |= component[:, :, 1:]
        grown &= partition
        if (step + 1) % check_every == 0 and torch.equal(grown, component):
            break
        component = grown
    return component


def normalized_cut(
    features: torch.Tensor,
    grid_size: tuple[int, int],
    tau: float = 0.2,
    eps: float = 1e-5,
    output: TokenCutOutput = "component",
) -> torch.Tensor:
    """TokenCut on token features `(B, N, D)` with `N = h * w` (row-major) -> `(B, h, w)` float32.

    "component": 1 on the seed's 4-connected component, 0 elsewhere (the paper's Figure 3);
    "eigenvector": the second eigenvector oriented so that the seed's side is positive-going (flipped
    with the partition).
    """
    if output not in ("component", "eigenvector"):
        raise ValueError(f"output must be 'component' or 'eigenvector', got {output!r}")
    height, width = grid_size
    if features.dim() != 3 or features.shape[1] != height * width:
        raise ValueError(f"features of shape {tuple(features.shape)} do not match the {height}x{width} grid")
    eigenvector = second_eigenvector(features, tau, eps)  # (B, N)
    partition = eigenvector > eigenvector.mean(dim=1, keepdim=True)
    seed = eigenvector.abs().argmax(dim=1)  # (B,)
    flip = ~partition.gather(1, seed[:, None])  # (B, 1)
    partition = partition ^ flip
    eigenvector = torch.where(flip, -eigenvector, eigenvector)
    if output == "eigenvector":
        return eigenvector.view(-1, height, width)
    return seed_component(partition.view(-1, height, width), seed).float()


@register
class TokenCut(DetectorMethod):
    """TokenCut on a DINO / DINOv2 ViT. See the module docstring for the algorithm.

    Args:
        model: a `ViTModel` / `Dinov2Model` / `Dinov2WithRegistersModel`.
        image_size: detector input size; the whole image is resized to it (aspect not kept; official
            TokenCut pads instead). Must be a multiple of the patch size.
        tau: cosine threshold of the binary graph (0.2). eps: weight of the other edges (1e-5).
        output: "component" (default) or "eigenvector".
    """

    name = "tokencut"
    default_model = "facebook/dino-vits16"
    load_model = staticmethod(load_vit_detector)
    check_model = staticmethod(check_vit_detector)

    def __init__(
        self,
        model,
        image_size: int | Sequence[int] = 224,
        tau: float = 0.2,
        eps: float = 1e-5,
        output: TokenCutOutput = "component",
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        dtype: DetectorDtype = "float32",
    ):
        if not isinstance(model, tuple(VIT_DETECTORS.values())):
            raise ValueError(f"tokencut needs a ViTModel / Dinov2Model, got {type(model).__name__}")
        if output not in ("component", "eigenvector"):
            raise ValueError(f"output must be 'component' or 'eigenvector', got {output!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0 (it keeps the graph connected), got {eps}")
        self.tau, self.eps, self.output = float(tau), float(eps), output
        self._init_detector(model, check_image_size(model, image_size), image_mean, image_std, dtype)

    def method_params(self) -> dict:
        return {"tau": self.tau, "eps": self.eps, "output": self.output}

    @torch.no_grad()
    def compute(self, pixel_values: torch.Tensor) -> torch.Tensor:
        _, key = last_block_query_key(self.model, pixel_values)  # (B, heads, T, hd)
        batch, heads, tokens, head_dim = key.shape
        key = key.transpose(1, 2).reshape(batch, tokens, heads * head_dim)  # (B, T, D): heads concatenated
        patch = patch_size_of(self.model.config)
        grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
        return normalized_cut(key[:, num_prefix_tokens(self.model):], grid, self.tau, self.eps, self.output)
