"""Linear probing with the MAE protocol (He et al., 2022, `main_linprobe.py`).

The encoder is frozen; the head is `BatchNorm1d(affine=False, eps=1e-6)` + `Linear` (weights ~ N(0, 0.01),
truncated at 2 std, bias 0), trained with LARS (momentum 0.9, trust coefficient 0.001, no weight decay),
`lr = base_lr * effective_batch / 256` with base lr 0.1, linear warmup then half-cycle cosine to 0, updated
every step. The BatchNorm without affine only whitens the features: the paper's numbers depend on it, because
MAE features have very different scales per dimension.

Two ways to feed the head, one training loop:
- `train_linear_probe(model=..., dataloader=...)`: the protocol itself, features of augmented images
  (RandomResizedCrop + flip) recomputed every epoch through `extract_features`;
- `train_linear_probe_on_features(features, labels)`: the fast mode, on cached features of un-augmented
  images (no augmentation, so it is a cheaper approximation of the protocol, reported under its own name).

MAE's base lr 0.1 assumes ImageNet's ~450k LARS steps; on a small dataset it barely moves the head (LARS moves
the weights by ~lr * 0.001 * |w| per step). So, as DINOv2's linear evaluation and VISSL do, the fast mode can
pick the lr instead of trusting one value: `select_linear_probe_hparams` trains one head per grid point
(base lr x weight decay) in a single pass over cached features and keeps the best on a held-out slice of the
train split. `degenerate_reason` names a head that did not train (one class predicted for nearly every image,
or a training loss not below the uniform prediction's log C).
"""

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..features import extract_features
from .few_shot import held_out_split

# Base lrs (before the batch / 256 scaling) swept by default: MAE's 0.1 up to where LARS's relative step
# (~lr * 0.001 per step, x10 with momentum) nears 1; beyond, the biases (plain SGD in LARS) diverge (docs/RESULTS.md, section 4).
DEFAULT_LR_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
# A head whose most predicted class covers this share of a split's images (while the true labels do not) has
# collapsed to (nearly) one class.
COLLAPSE_SHARE = 0.95


class LARS(torch.optim.Optimizer):
    r"""Layer-wise adaptive rate scaling, as in MAE's `util/lars.py` (from MoCo v3).

    For every parameter with more than one dimension (weights, not biases or norms):
        g <- g + weight_decay * w
        g <- g * q,  q = trust_coefficient * ||w|| / ||g||  (q = 1 when ||w|| = 0 or ||g|| = 0)
    then for all parameters, with momentum buffer mu (starting at 0):
        mu <- momentum * mu + g
        w  <- w - lr * mu
    """

    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9, trust_coefficient: float = 0.001):
        if lr < 0 or weight_decay < 0 or not 0 <= momentum < 1 or trust_coefficient <= 0:
            raise ValueError(
                f"LARS needs lr >= 0, weight_decay >= 0, 0 <= momentum < 1, trust_coefficient > 0; got "
                f"lr={lr}, weight_decay={weight_decay}, momentum={momentum}, trust_coefficient={trust_coefficient}"
            )
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if p.ndim > 1:
                    grad = grad.add(p, alpha=group["weight_decay"])
                    param_norm, grad_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    one = torch.ones_like(param_norm)
                    trust = torch.where(
                        (param_norm > 0) & (grad_norm > 0),
                        group["trust_coefficient"] * param_norm / grad_norm.clamp_min(torch.finfo(grad_norm.dtype).tiny),
                        one,
                    )
                    grad = grad.mul(trust)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                state["mu"].mul_(group["momentum"]).add_(grad)
                p.add_(state["mu"], alpha=-group["lr"])
        return loss


class LinearProbeHead(nn.Module):
    """`BatchNorm1d(affine=False, eps=1e-6)` + `Linear`: `(B, D)` features -> `(B, C)` logits."""

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(num_features, affine=False, eps=1e-6)
        self.linear = _mae_linear(num_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(features))


class StackedProbeHeads(nn.Module):
    """G linear heads on one `BatchNorm1d(affine=False)`: `(B, D)` features -> `(G, B, C)` logits.

    The norm has no parameters, so sharing it is the same as G separate `LinearProbeHead`s; each head keeps its
    own `Linear` so that LARS computes its trust ratio per head (a stacked `(G, C, D)` tensor would share one).
    """

    def __init__(self, num_features: int, num_classes: int, num_heads: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(num_features, affine=False, eps=1e-6)
        self.linears = nn.ModuleList(_mae_linear(num_features, num_classes) for _ in range(num_heads))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        normed = self.norm(features)
        return torch.stack([linear(normed) for linear in self.linears])  # (G, B, C)


def _mae_linear(num_features: int, num_classes: int) -> nn.Linear:
    """MAE's probe layer: weights ~ N(0, 0.01) truncated at 2 std, bias 0."""
    linear = nn.Linear(num_features, num_classes)
    nn.init.trunc_normal_(linear.weight, std=0.01, a=-0.02, b=0.02)
    nn.init.zeros_(linear.bias)
    return linear


def learning_rate_at(epoch: float, lr: float, epochs: int, warmup_epochs: float, min_lr: float = 0.0) -> float:
    """MAE's schedule at a fractional epoch: linear warmup to `lr`, then half-cycle cosine to `min_lr`."""
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    progress = (epoch - warmup_epochs) / max(epochs - warmup_epochs, 1e-12)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _check_hparams(epochs: int, warmup_epochs: float, batch_size: int, base_lr: float) -> None:
    if epochs < 1 or not 0 <= warmup_epochs <= epochs or batch_size < 2 or base_lr <= 0:
        raise ValueError(
            f"linear probe needs epochs >= 1, 0 <= warmup_epochs <= epochs, batch_size >= 2 (BatchNorm), base_lr > 0; "
            f"got epochs={epochs}, warmup_epochs={warmup_epochs}, batch_size={batch_size}, base_lr={base_lr}"
        )


def _per_head_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each head, `(G,)`, from logits `(G, B, C)` (or `(B, C)`: one head)."""
    logits = logits.reshape(-1, labels.shape[0], logits.shape[-1])  # (G, B, C)
    losses = F.cross_entropy(logits.flatten(0, 1), labels.repeat(logits.shape[0]), reduction="none")  # (G * B,)
    return losses.view(logits.shape[0], -1).mean(1)


def _fit(
    head: nn.Module,
    param_groups: list[dict],
    epoch_batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float,
    progress: bool,
    backward: Callable[[torch.Tensor], None] | None = None,
    optimizer_class: Callable[[list[dict]], torch.optim.Optimizer] = LARS,
    desc: str = "linear probe",
) -> torch.Tensor:
    """The one training loop: cross-entropy, LARS (or `optimizer_class`: the attentive probe's AdamW), the
    schedule set every step; the head ends in eval mode.

    `param_groups` are optimizer groups, each with its own `peak_lr` and `weight_decay` (the linear probe: one per
    head; the attentive probe: two per head, decayed and not). The heads' losses are summed for the backward
    pass: no parameter is shared, so each head gets exactly its own gradient. Returns each head's mean training
    loss over the last epoch, `(G,)`, G = the heads the forward pass returns.
    """
    optimizer = optimizer_class(param_groups)
    backward = backward or (lambda loss: loss.backward())
    head.train()
    bar = tqdm(total=epochs * steps_per_epoch, desc=desc, unit="step", disable=not progress)
    for epoch in range(epochs):
        last_epoch_loss = 0.0  # becomes (G,) at the first step
        for step, (features, labels) in enumerate(epoch_batches(epoch)):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(epoch + step / steps_per_epoch, group["peak_lr"], epochs, warmup_epochs)
            losses = _per_head_loss(head(features), labels)
            optimizer.zero_grad(set_to_none=True)
            backward(losses.sum())
            optimizer.step()
            last_epoch_loss = last_epoch_loss + losses.detach().cpu()
            bar.update(1)
            bar.set_postfix(loss=f"{losses.min().item():.3f}", refresh=False)
    bar.close()
    head.eval()
    return last_epoch_loss / steps_per_epoch


def _check_features(features: torch.Tensor, labels: torch.Tensor) -> None:
    if features.dim() != 2 or labels.dim() != 1 or features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"features must be (N, D) and labels (N,) with the same N, got {tuple(features.shape)} and {tuple(labels.shape)}"
        )
    if features.shape[0] < 2:
        raise ValueError(f"the linear probe needs at least 2 training images, got {features.shape[0]}")


def _feature_batches(features: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int):
    """`(epoch_batches, steps_per_epoch, batch_size)`: seeded shuffles of cached features, last partial batch
    dropped (a batch of one image would make BatchNorm fail; like MAE's `drop_last`)."""
    generator = torch.Generator().manual_seed(seed)
    num = features.shape[0]
    batch_size = min(batch_size, num)
    steps_per_epoch = num // batch_size

    def epoch_batches(epoch: int):
        order = torch.randperm(num, generator=generator).to(features.device)
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            yield features[idx], labels[idx]

    return epoch_batches, steps_per_epoch, batch_size


def train_linear_probe_on_features(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int | None = None,
    epochs: int = 90,
    warmup_epochs: float = 10,
    batch_size: int = 256,
    base_lr: float = 0.1,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: bool = False,
) -> LinearProbeHead:
    """Fast mode: train the head on fixed features `(N, D)` with labels `(N,)`; returns the head in eval mode,
    with its mean training loss over the last epoch as `head.train_loss` (for `degenerate_reason`)."""
    _check_hparams(epochs, warmup_epochs, batch_size, base_lr)
    _check_features(features, labels)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    torch.manual_seed(seed)  # the head's initialisation
    head = LinearProbeHead(features.shape[1], num_classes).to(features.device)
    epoch_batches, steps_per_epoch, batch_size = _feature_batches(features, labels, batch_size, seed)
    groups = [{"params": list(head.parameters()), "peak_lr": base_lr * batch_size / 256, "weight_decay": weight_decay}]
    head.train_loss = _fit(head, groups, epoch_batches, steps_per_epoch, epochs, warmup_epochs, progress)[0].item()
    return head


@dataclass
class ProbeSelection:
    """The outcome of a held-out sweep: the chosen `base_lr` / `weight_decay` and every grid point's record
    (`base_lr`, `weight_decay`, `held_out_top1` in %, `held_out_loss`, `train_loss`)."""

    base_lr: float
    weight_decay: float
    grid: list[dict]
    num_held_out: int
    held_out_fraction: float
    seed: int

    def as_dict(self) -> dict:
        return {
            "chosen_base_lr": self.base_lr, "chosen_weight_decay": self.weight_decay, "held_out_split": "train",
            "held_out_fraction": self.held_out_fraction, "num_held_out": self.num_held_out, "held_out_seed": self.seed,
            "grid": self.grid,
        }


def _check_grid(base_lrs: Sequence[float], weight_decays: Sequence[float]) -> None:
    if not base_lrs or not weight_decays:
        raise ValueError(f"the sweep needs at least one base lr and one weight decay, got {list(base_lrs)} and {list(weight_decays)}")
    if min(base_lrs) <= 0 or min(weight_decays) < 0:
        raise ValueError(f"the sweep needs base lrs > 0 and weight decays >= 0, got {list(base_lrs)} and {list(weight_decays)}")


@torch.no_grad()
def sweep_linear_probe_on_features(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    held_out_features: torch.Tensor,
    held_out_labels: torch.Tensor,
    num_classes: int,
    base_lrs: Sequence[float] = DEFAULT_LR_GRID,
    weight_decays: Sequence[float] = (0.0,),
    epochs: int = 90,
    warmup_epochs: float = 10,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> list[dict]:
    """One head per (base lr, weight decay) pair, all trained in one pass over the same batches; each grid
    point's `held_out_top1` (%), `held_out_loss` and last-epoch `train_loss`, in grid order (lr-major)."""
    _check_grid(base_lrs, weight_decays)
    _check_hparams(epochs, warmup_epochs, batch_size, min(base_lrs))
    _check_features(train_features, train_labels)
    grid = [(float(lr), float(wd)) for lr in base_lrs for wd in weight_decays]
    torch.manual_seed(seed)
    head = StackedProbeHeads(train_features.shape[1], num_classes, len(grid)).to(train_features.device)
    epoch_batches, steps_per_epoch, batch_size = _feature_batches(train_features, train_labels, batch_size, seed)
    groups = [
        {"params": list(linear.parameters()), "peak_lr": lr * batch_size / 256, "weight_decay": wd}
        for linear, (lr, wd) in zip(head.linears, grid)
    ]
    with torch.enable_grad():
        train_loss = _fit(head, groups, epoch_batches, steps_per_epoch, epochs, warmup_epochs, progress)
    logits = head(held_out_features.to(train_features.device))  # (G, H, C)
    return grid_records(grid, logits, held_out_labels, train_loss)


def grid_records(grid: Sequence[tuple[float, float]], logits: torch.Tensor, held_out_labels: torch.Tensor,
                 train_loss: torch.Tensor) -> list[dict]:
    """One record per grid point (`base_lr`, `weight_decay`, `held_out_top1` in %, `held_out_loss`, last-epoch
    `train_loss`), from the G heads' held-out logits `(G, H, C)`: what `select_on_held_out` chooses from."""
    held_out_labels = held_out_labels.to(logits.device)
    top1 = (logits.argmax(-1) == held_out_labels).float().mean(1).cpu()  # (G,)
    held_out_loss = _per_head_loss(logits, held_out_labels).cpu()
    return [
        {"base_lr": lr, "weight_decay": wd, "held_out_top1": 100.0 * top1[g].item(),
         "held_out_loss": held_out_loss[g].item(), "train_loss": train_loss[g].item()}
        for g, (lr, wd) in enumerate(grid)
    ]


def select_linear_probe_hparams(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    base_lrs: Sequence[float] = DEFAULT_LR_GRID,
    weight_decays: Sequence[float] = (0.0,),
    held_out_fraction: float = 0.15,
    epochs: int = 90,
    warmup_epochs: float = 10,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> ProbeSelection:
    """Pick base lr and weight decay on a seeded, class-balanced held-out slice of the train split.

    The sweep trains on the rest of `features` (the eval splits are never seen); the best held-out top-1 wins,
    ties going to the lower held-out loss (small held-out slices tie often).
    """
    return select_on_held_out(
        features, labels, held_out_fraction, seed,
        lambda *split: sweep_linear_probe_on_features(
            *split, num_classes, base_lrs, weight_decays, epochs, warmup_epochs, batch_size, seed, progress),
    )


def select_on_held_out(
    features: torch.Tensor,
    labels: torch.Tensor,
    held_out_fraction: float,
    seed: int,
    sweep: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], list[dict]],
) -> ProbeSelection:
    """The selection rule every probe shares (linear and attentive): `sweep(fit_x, fit_y, held_x, held_y)` returns
    the grid's records (`base_lr`, `weight_decay`, `held_out_top1`, `held_out_loss`, `train_loss`), trained on the
    fit part of a seeded, class-balanced `held_out_split`; the best held-out top-1 wins, ties to the lower loss."""
    fit_idx, held_idx = held_out_split(labels, held_out_fraction, seed)
    grid = sweep(
        features[fit_idx.to(features.device)], labels[fit_idx.to(labels.device)],
        features[held_idx.to(features.device)], labels[held_idx.to(labels.device)],
    )
    # a diverged head's held-out loss is NaN: rank it last among equal accuracies
    best = max(grid, key=lambda point: (point["held_out_top1"], -math.inf if math.isnan(point["held_out_loss"]) else -point["held_out_loss"]))
    return ProbeSelection(best["base_lr"], best["weight_decay"], grid, int(held_idx.numel()), held_out_fraction, seed)


def degenerate_reason(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int, train_loss: float | None) -> str | None:
    """Why a probe's result cannot be trusted, or None.

    Two signs that the head did not train: it predicts one class for (nearly) all images of the split
    (at least `COLLAPSE_SHARE` of them while the true labels are less skewed), or its final training loss is not
    below log(num_classes), the loss of predicting the uniform distribution.
    """
    reasons = []
    counts = torch.bincount(predictions.flatten().cpu(), minlength=num_classes)
    share = counts.max().item() / max(predictions.numel(), 1)
    true_share = torch.bincount(labels.flatten().cpu(), minlength=num_classes).max().item() / max(labels.numel(), 1)
    if share >= COLLAPSE_SHARE and true_share < COLLAPSE_SHARE:
        reasons.append(
            f"predicts class {counts.argmax().item()} for {100 * share:.1f}% of the {predictions.numel()} images "
            f"(the most frequent true class is {100 * true_share:.1f}%)"
        )
    if train_loss is not None and not train_loss < math.log(num_classes):
        reasons.append(f"final training loss {train_loss:.3f} is not below log({num_classes}) = {math.log(num_classes):.3f}")
    return "; ".join(reasons) or None


def train_linear_probe(
    model: nn.Module,
    dataloader: Iterable,
    num_features: int,
    num_classes: int,
    pooling: str = "cls",
    epochs: int = 90,
    warmup_epochs: float = 10,
    base_lr: float = 0.1,
    weight_decay: float = 0.0,
    seed: int = 0,
    accelerator=None,
    progress: bool = False,
) -> nn.Module:
    """The MAE protocol: the frozen `model` encodes augmented batches `{"pixel_values", "labels"}` every epoch.

    `dataloader` must yield augmented training images (RandomResizedCrop + flip) and drop its last partial
    batch. With an `accelerate.Accelerator`, the head is wrapped for data parallelism and `dataloader` is
    expected to be prepared already; the effective batch for the lr scaling is the global batch.
    Returns the trained head (unwrapped) in eval mode, with `head.train_loss` as in `train_linear_probe_on_features`.
    """
    _check_hparams(epochs, warmup_epochs, 2, base_lr)
    torch.manual_seed(seed)
    model.eval().requires_grad_(False)
    head = LinearProbeHead(num_features, num_classes)
    steps_per_epoch = len(dataloader)
    if steps_per_epoch == 0:
        raise ValueError("the linear-probe dataloader yields no batch (fewer training images than one batch?)")
    batch_size = getattr(dataloader, "total_batch_size", None) or dataloader.batch_size
    world = accelerator.num_processes if accelerator is not None else 1
    effective_batch = batch_size if hasattr(dataloader, "total_batch_size") else batch_size * world
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    head = head.to(device)
    train_head = accelerator.prepare(head) if accelerator is not None else head

    def epoch_batches(epoch: int):
        if hasattr(dataloader, "set_epoch"):
            dataloader.set_epoch(epoch)
        for batch in dataloader:
            pixel_values = batch["pixel_values"].to(device)
            features = extract_features(model, pixel_values, pooling)  # (B, D), no grad
            yield features, batch["labels"].to(device)

    backward = accelerator.backward if accelerator is not None else None
    groups = [{"params": list(train_head.parameters()), "peak_lr": base_lr * effective_batch / 256, "weight_decay": weight_decay}]
    train_loss = _fit(train_head, groups, epoch_batches, steps_per_epoch, epochs, warmup_epochs, progress, backward)
    head = accelerator.unwrap_model(train_head) if accelerator is not None else head
    head.train_loss = train_loss[0].item()
    return head


@torch.no_grad()
def linear_probe_rank(head: nn.Module, features: torch.Tensor, num_ranked: int = 5, batch_size: int = 4096) -> torch.Tensor:
    """Class ids ranked best first, `(Q, min(num_ranked, C))`, for features `(Q, D)`."""
    head.eval()
    device = next(head.parameters()).device
    ranked = []
    for start in range(0, features.shape[0], batch_size):
        logits = head(features[start : start + batch_size].to(device))  # (b, C)
        ranked.append(logits.topk(min(num_ranked, logits.shape[1]), dim=1).indices.cpu())
    return torch.cat(ranked)


__all__ = [
    "LARS",
    "LinearProbeHead",
    "StackedProbeHeads",
    "ProbeSelection",
    "DEFAULT_LR_GRID",
    "COLLAPSE_SHARE",
    "learning_rate_at",
    "train_linear_probe",
    "train_linear_probe_on_features",
    "sweep_linear_probe_on_features",
    "select_linear_probe_hparams",
    "select_on_held_out",
    "degenerate_reason",
    "linear_probe_rank",
]
