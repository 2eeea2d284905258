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
"""

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..features import extract_features


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
        self.linear = nn.Linear(num_features, num_classes)
        nn.init.trunc_normal_(self.linear.weight, std=0.01, a=-0.02, b=0.02)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(features))


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


def _fit(
    head: nn.Module,
    epoch_batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    steps_per_epoch: int,
    epochs: int,
    lr: float,
    warmup_epochs: float,
    weight_decay: float,
    progress: bool,
    backward: Callable[[torch.Tensor], None] | None = None,
) -> nn.Module:
    """The one training loop: cross-entropy, LARS, the schedule set every step."""
    optimizer = LARS(head.parameters(), lr=lr, weight_decay=weight_decay)
    criterion = nn.CrossEntropyLoss()
    backward = backward or (lambda loss: loss.backward())
    head.train()
    bar = tqdm(total=epochs * steps_per_epoch, desc="linear probe", unit="step", disable=not progress)
    for epoch in range(epochs):
        for step, (features, labels) in enumerate(epoch_batches(epoch)):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(epoch + step / steps_per_epoch, lr, epochs, warmup_epochs)
            loss = criterion(head(features), labels)
            optimizer.zero_grad(set_to_none=True)
            backward(loss)
            optimizer.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    head.eval()
    return head


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
    """Fast mode: train the head on fixed features `(N, D)` with labels `(N,)`; returns the head in eval mode."""
    _check_hparams(epochs, warmup_epochs, batch_size, base_lr)
    if features.dim() != 2 or labels.dim() != 1 or features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"features must be (N, D) and labels (N,) with the same N, got {tuple(features.shape)} and {tuple(labels.shape)}"
        )
    if features.shape[0] < 2:
        raise ValueError(f"the linear probe needs at least 2 training images, got {features.shape[0]}")
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the head's initialisation
    head = LinearProbeHead(features.shape[1], num_classes).to(features.device)
    num = features.shape[0]
    batch_size = min(batch_size, num)
    # A last batch of one image would make BatchNorm fail; like MAE's `drop_last`, skip the remainder.
    steps_per_epoch = num // batch_size

    def epoch_batches(epoch: int):
        order = torch.randperm(num, generator=generator).to(features.device)
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            yield features[idx], labels[idx]

    lr = base_lr * batch_size / 256
    return _fit(head, epoch_batches, steps_per_epoch, epochs, lr, warmup_epochs, weight_decay, progress)


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
    Returns the trained head (unwrapped) in eval mode.
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
    lr = base_lr * effective_batch / 256
    _fit(train_head, epoch_batches, steps_per_epoch, epochs, lr, warmup_epochs, weight_decay, progress, backward)
    return accelerator.unwrap_model(train_head) if accelerator is not None else head


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
    "learning_rate_at",
    "train_linear_probe",
    "train_linear_probe_on_features",
    "linear_probe_rank",
]
