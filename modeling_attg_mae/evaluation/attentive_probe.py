"""Attentive probing: a small cross-attention pooling head trained on the frozen encoder's tokens.

A linear probe sees one global vector (CLS or the patch mean). Masked-image models spread what they know over
the patch tokens and train no CLS objective, so a fixed pooling under-rates them (CAE; V-JEPA; Psomas et al.,
"Attention, Please! Revisiting Attentive Probing for Masked Image Modeling"). The attentive probe learns the
pooling instead: `num_queries` learned queries attend to the frozen tokens (CLS + patches), and a linear
classifier reads the pooled vector.

    tokens (B, T, D) -> LayerNorm -> keys / values
    queries (Q, D)   -> nn.MultiheadAttention(D, num_heads) -> (B, Q, D) -> LayerNorm -> mean over Q -> Linear -> (B, C)

The query outputs are averaged, not concatenated: the queries are interchangeable (any permutation of them is
the same head), averaging keeps the classifier at D x C whatever Q is, so that more queries add only Q x D
parameters; timm's `AttentionPoolLatent(pool_type="avg")` does the same. The LayerNorm on the tokens plays the part of
the linear probe's `BatchNorm1d(affine=False)`: frozen MAE features have very different scales per dimension.

Training: AdamW (betas 0.9 / 0.999), weight decay on the projection and classifier weights only (not on biases,
norms or the queries, as MAE and timm exclude biases, norms and tokens), linear warmup then half-cycle cosine
(`linear_probe.learning_rate_at`, through the shared training loop `_fit`), cross-entropy, and
`lr = base_lr * batch / 256` as for the linear probe. The lr / weight decay are picked by the same held-out sweep
as the linear probe's (`select_on_held_out`): one head per grid point, all trained in one pass over the same batches.
"""

from collections.abc import Sequence

import torch
from torch import nn

from .linear_probe import (
    ProbeSelection,
    _check_grid,
    _feature_batches,
    _fit,
    _mae_linear,
    grid_records,
    select_on_held_out,
)

# AdamW base lrs (before the batch / 256 scaling), half-decade steps around 1e-3, AdamW's usual lr for a small
# head; on ImageNet none of these is measured here (docs/RESULTS.md has no attentive-probe run yet).
DEFAULT_ATTENTIVE_LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
DEFAULT_ATTENTIVE_BASE_LR = 1e-3
# MAE's AdamW weight decay (pre-training and fine-tuning).
DEFAULT_ATTENTIVE_WEIGHT_DECAY = 0.05
# timm's `AttentionPoolLatent` default; 8 divides every standard ViT width (192, 384, 768, 1024, 1280, 1536).
DEFAULT_ATTENTIVE_NUM_HEADS = 8
ADAMW_BETAS = (0.9, 0.999)

__all__ = [
    "AttentiveProbeHead",
    "StackedAttentiveHeads",
    "DEFAULT_ATTENTIVE_LR_GRID",
    "DEFAULT_ATTENTIVE_BASE_LR",
    "DEFAULT_ATTENTIVE_WEIGHT_DECAY",
    "DEFAULT_ATTENTIVE_NUM_HEADS",
    "check_attentive_head",
    "attentive_probe_num_parameters",
    "train_attentive_probe_on_features",
    "sweep_attentive_probe_on_features",
    "select_attentive_probe_hparams",
]


def check_attentive_head(num_features: int, num_heads: int, num_queries: int) -> None:
    """The head's shape against the tokens' width, with a message that says what to pass instead."""
    if num_queries < 1:
        raise ValueError(f"--attentive_num_queries must be >= 1, got {num_queries}")
    if num_heads < 1:
        raise ValueError(f"--attentive_num_heads must be >= 1, got {num_heads}")
    if num_features % num_heads:
        divisors = [h for h in range(1, min(num_features, 64) + 1) if num_features % h == 0]
        raise ValueError(
            f"--attentive_num_heads {num_heads} does not divide the tokens' width {num_features} (each attention head "
            f"gets width / heads dimensions); pass one of {divisors}"
        )


def attentive_probe_num_parameters(num_features: int, num_classes: int, num_queries: int = 1) -> int:
    """Trainable parameters of `AttentiveProbeHead`, by hand: queries Q*D, two LayerNorms 2*2D, the attention's
    in-projection 3D*D + 3D and out-projection D*D + D, the classifier D*C + C (independent of the head count)."""
    d = num_features
    return num_queries * d + 4 * d + (4 * d * d + 4 * d) + d * num_classes + num_classes


class AttentiveProbeHead(nn.Module):
    """Cross-attention pooling + linear classifier: tokens `(B, T, D)` -> logits `(B, C)`.

    Args:
        num_features: D, the tokens' width.
        num_classes: C.
        num_queries: Q learned queries; their outputs are averaged (see the module docstring).
        num_heads: attention heads; must divide D.
    """

    def __init__(self, num_features: int, num_classes: int, num_queries: int = 1, num_heads: int = DEFAULT_ATTENTIVE_NUM_HEADS):
        super().__init__()
        check_attentive_head(num_features, num_heads, num_queries)
        self.queries = nn.Parameter(torch.empty(num_queries, num_features))
        nn.init.trunc_normal_(self.queries, std=0.02)  # as ViT's CLS token / timm's latent queries
        self.token_norm = nn.LayerNorm(num_features)
        self.attention = nn.MultiheadAttention(num_features, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(num_features)
        self.classifier = _mae_linear(num_features, num_classes)

    def pool(self, tokens: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(pooled (B, Q, D), attention (B, Q, T) averaged over heads, or None)` for tokens `(B, T, D)`.

        The same function as `self.attention(queries, x, x)` (tested to 1e-5), computed in an order that never
        projects the T tokens: the queries are learned, not per image, so each head's key projection can be folded
        into its query (`u_h = W_k,h^T q_h`, logits = `x . u_h`; the key bias adds the same number to every
        token's logit and cancels in the softmax), and the value projection commutes with the attention-weighted
        sum (`sum_t a_t (W_v x_t + b_v) = W_v (sum_t a_t x_t) + b_v`, as the weights sum to 1). That is
        O(B T D H) per step instead of the O(B T D^2) of projecting every token: about 20x fewer multiply-adds
        for the demo model (T = 65, D = 128, H = 8) and more for ViT-B (T = 197, D = 768), which is what makes
        the 90-epoch sweep affordable on cached tokens.
        """
        if tokens.dim() != 3 or tokens.shape[-1] != self.queries.shape[1]:
            raise ValueError(f"the attentive probe needs tokens (B, T, {self.queries.shape[1]}), got {tuple(tokens.shape)}")
        x = self.token_norm(tokens)  # (B, T, D)
        attention = self.attention
        num_queries, dim = self.queries.shape
        heads, width = attention.num_heads, dim // attention.num_heads
        w_q, w_k, w_v = attention.in_proj_weight.chunk(3)  # (D, D) each; rows h*width:(h+1)*width are head h
        b_q, _, b_v = attention.in_proj_bias.chunk(3)
        q = (self.queries @ w_q.T + b_q).view(num_queries, heads, width) * width**-0.5  # (Q, H, w), scaled
        u = torch.einsum("qhw,hwd->qhd", q, w_k.view(heads, width, dim))  # (Q, H, D): keys folded into queries
        weights = torch.einsum("btd,qhd->bqht", x, u).softmax(dim=-1)  # (B, Q, H, T)
        pooled_x = torch.einsum("bqht,btd->bqhd", weights, x)  # (B, Q, H, D): per head, attention-weighted tokens
        values = torch.einsum("bqhd,hwd->bqhw", pooled_x, w_v.view(heads, width, dim)) + b_v.view(heads, width)
        pooled = attention.out_proj(values.reshape(x.shape[0], num_queries, dim))  # (B, Q, D)
        return pooled, (weights.mean(dim=2) if need_weights else None)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pooled, _ = self.pool(tokens)  # (B, Q, D)
        return self.classifier(self.norm(pooled).mean(dim=1))  # (B, C)

    def param_groups(self, peak_lr: float, weight_decay: float) -> list[dict]:
        """Two optimizer groups: the weight matrices decayed; biases, norms and queries not."""
        decayed = [p for p in self.parameters() if p.ndim > 1 and p is not self.queries]
        ids = {id(p) for p in decayed}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": decayed, "peak_lr": peak_lr, "weight_decay": weight_decay},
                {"params": rest, "peak_lr": peak_lr, "weight_decay": 0.0}]


class StackedAttentiveHeads(nn.Module):
    """G independent `AttentiveProbeHead`s on the same tokens: `(B, T, D)` -> `(G, B, C)` (one per grid point)."""

    def __init__(self, num_features: int, num_classes: int, num_grid: int, num_queries: int, num_heads: int):
        super().__init__()
        self.heads = nn.ModuleList(
            AttentiveProbeHead(num_features, num_classes, num_queries, num_heads) for _ in range(num_grid)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(tokens) for head in self.heads])  # (G, B, C)


def _adamw(param_groups: list[dict]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups, betas=ADAMW_BETAS)


def _check(tokens: torch.Tensor, labels: torch.Tensor, epochs: int, warmup_epochs: float, batch_size: int,
           base_lrs: Sequence[float], weight_decays: Sequence[float]) -> None:
    if tokens.dim() != 3 or labels.dim() != 1 or tokens.shape[0] != labels.shape[0]:
        raise ValueError(
            f"the attentive probe needs tokens (N, T, D) and labels (N,) with the same N, got {tuple(tokens.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if tokens.shape[0] < 2:
        raise ValueError(f"the attentive probe needs at least 2 training images, got {tokens.shape[0]}")
    _check_grid(base_lrs, weight_decays)
    if epochs < 1 or not 0 <= warmup_epochs <= epochs or batch_size < 1:
        raise ValueError(f"the attentive probe needs epochs >= 1, 0 <= warmup_epochs <= epochs, batch_size >= 1; got "
                         f"epochs={epochs}, warmup_epochs={warmup_epochs}, batch_size={batch_size}")


def _train_heads(tokens, labels, num_classes, grid, num_queries, num_heads, epochs, warmup_epochs, batch_size, seed,
                 progress, device) -> tuple[StackedAttentiveHeads, torch.Tensor]:
    """One head per `(base_lr, weight_decay)` of `grid`, trained in one pass over the same seeded batches.

    The tokens stay where they are (host memory: they can be far larger than the accelerator's); each batch moves
    to `device`, where the heads live.
    """
    device = torch.device(device) if device is not None else tokens.device
    torch.manual_seed(seed)  # the heads' initialisation
    heads = StackedAttentiveHeads(tokens.shape[-1], num_classes, len(grid), num_queries, num_heads).to(device)
    epoch_batches, steps_per_epoch, batch_size = _feature_batches(tokens, labels, batch_size, seed)

    def batches_on_device(epoch: int):
        for x, y in epoch_batches(epoch):
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    groups = [g for head, (lr, wd) in zip(heads.heads, grid) for g in head.param_groups(lr * batch_size / 256, wd)]
    train_loss = _fit(heads, groups, batches_on_device, steps_per_epoch, epochs, warmup_epochs, progress,
                      optimizer_class=_adamw, desc="attentive probe")
    return heads, train_loss


def train_attentive_probe_on_features(
    tokens: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int | None = None,
    num_queries: int = 1,
    num_heads: int = DEFAULT_ATTENTIVE_NUM_HEADS,
    epochs: int = 90,
    warmup_epochs: float = 10,
    batch_size: int = 256,
    base_lr: float = DEFAULT_ATTENTIVE_BASE_LR,
    weight_decay: float = DEFAULT_ATTENTIVE_WEIGHT_DECAY,
    seed: int = 0,
    progress: bool = False,
    device: torch.device | str | None = None,
) -> AttentiveProbeHead:
    """Train the head on cached tokens `(N, T, D)` with labels `(N,)`; returns it in eval mode on `device`, with its
    mean training loss over the last epoch as `head.train_loss` (for `degenerate_reason`)."""
    _check(tokens, labels, epochs, warmup_epochs, batch_size, [base_lr], [weight_decay])
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    heads, train_loss = _train_heads(tokens, labels, num_classes, [(base_lr, weight_decay)], num_queries, num_heads,
                                     epochs, warmup_epochs, batch_size, seed, progress, device)
    head = heads.heads[0]
    head.train_loss = train_loss[0].item()
    return head.eval()


@torch.no_grad()
def sweep_attentive_probe_on_features(
    train_tokens: torch.Tensor,
    train_labels: torch.Tensor,
    held_out_tokens: torch.Tensor,
    held_out_labels: torch.Tensor,
    num_classes: int,
    base_lrs: Sequence[float] = DEFAULT_ATTENTIVE_LR_GRID,
    weight_decays: Sequence[float] = (DEFAULT_ATTENTIVE_WEIGHT_DECAY,),
    num_queries: int = 1,
    num_heads: int = DEFAULT_ATTENTIVE_NUM_HEADS,
    epochs: int = 90,
    warmup_epochs: float = 10,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
    device: torch.device | str | None = None,
) -> list[dict]:
    """Every grid point's `held_out_top1` (%), `held_out_loss` and last-epoch `train_loss`, in grid order (lr-major),
    the same records as `sweep_linear_probe_on_features`."""
    _check(train_tokens, train_labels, epochs, warmup_epochs, batch_size, base_lrs, weight_decays)
    grid = [(float(lr), float(wd)) for lr in base_lrs for wd in weight_decays]
    with torch.enable_grad():
        heads, train_loss = _train_heads(train_tokens, train_labels, num_classes, grid, num_queries, num_heads, epochs,
                                         warmup_epochs, batch_size, seed, progress, device)
    heads.eval()
    device = next(heads.parameters()).device
    # in batches: the held-out tokens of a large split do not fit through G heads at once
    logits = torch.cat([heads(held_out_tokens[i : i + batch_size].to(device)).cpu()
                        for i in range(0, held_out_tokens.shape[0], batch_size)], dim=1)  # (G, H, C)
    return grid_records(grid, logits, held_out_labels, train_loss)


def select_attentive_probe_hparams(
    tokens: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    base_lrs: Sequence[float] = DEFAULT_ATTENTIVE_LR_GRID,
    weight_decays: Sequence[float] = (DEFAULT_ATTENTIVE_WEIGHT_DECAY,),
    held_out_fraction: float = 0.15,
    num_queries: int = 1,
    num_heads: int = DEFAULT_ATTENTIVE_NUM_HEADS,
    epochs: int = 90,
    warmup_epochs: float = 10,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
    device: torch.device | str | None = None,
) -> ProbeSelection:
    """Pick base lr / weight decay on a held-out slice of the train split: the linear probe's rule
    (`select_on_held_out`), with attentive heads."""
    return select_on_held_out(
        tokens, labels, held_out_fraction, seed,
        lambda *split: sweep_attentive_probe_on_features(
            *split, num_classes, base_lrs, weight_decays, num_queries, num_heads, epochs, warmup_epochs, batch_size,
            seed, progress, device),
    )
