"""Fast linear probe on fixed random-projection features of the synthetic set: MAE's fixed base lr 0.1 vs the
held-out lr sweep vs scikit-learn's LogisticRegression (C=1, standardised features), issue 16.

Features: the 16 px images' pixels (768 values) times one fixed Gaussian matrix -> 256-D. Two train sets:
"balanced" (the first 3000 train images) and "imbalanced" (class 0: 500 images, the others 170 each), both
evaluated on the 600 validation images (balanced). Everything is seeded; one command regenerates the record:

    python benchmarks/linear_probe_sweep.py --output docs/results/linear_probe_sweep.json
"""

import argparse
import json

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from modeling_attg_mae.data import load_synthetic_dataset
from modeling_attg_mae.evaluation.linear_probe import (
    degenerate_reason,
    linear_probe_rank,
    select_linear_probe_hparams,
    train_linear_probe_on_features,
)


def projected_features() -> dict:
    dataset = load_synthetic_dataset(num_train=5000, num_validation=600, image_size=16, num_classes=10, seed=0)
    pixels = {
        split: torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).flatten()
                            for im in dataset[split]["image"]])
        for split in ("train", "validation")
    }
    projection = torch.randn(pixels["train"].shape[1], 256, generator=torch.Generator().manual_seed(0)) / 768**0.5
    return {split: (pixels[split] @ projection, torch.tensor(dataset[split]["label"])) for split in pixels}


def probe_record(head, test_x, test_y) -> dict:
    predictions = linear_probe_rank(head, test_x)[:, 0]
    return {"top1": 100.0 * (predictions == test_y).float().mean().item(), "train_loss": head.train_loss,
            "most_predicted_share": torch.bincount(predictions, minlength=10).max().item() / len(test_y),
            "degenerate_reason": degenerate_reason(predictions, test_y, 10, head.train_loss)}


def compare(train_x, train_y, test_x, test_y) -> dict:
    scaler = StandardScaler().fit(train_x.numpy())
    logistic = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(train_x.numpy()), train_y.numpy())
    selection = select_linear_probe_hparams(train_x, train_y, 10)
    swept = train_linear_probe_on_features(train_x, train_y, 10, base_lr=selection.base_lr, weight_decay=selection.weight_decay)
    return {
        "num_train": len(train_y),
        "logistic_regression_top1": 100.0 * logistic.score(scaler.transform(test_x.numpy()), test_y.numpy()),
        "mae_fixed_lr_0.1": probe_record(train_linear_probe_on_features(train_x, train_y, 10), test_x, test_y),
        "sweep": {**probe_record(swept, test_x, test_y), **selection.as_dict()},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="docs/results/linear_probe_sweep.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    (x, y), (test_x, test_y) = (data := projected_features())["train"], data["validation"]
    imbalanced = torch.cat([torch.nonzero(y == c).flatten()[: 500 if c == 0 else 170] for c in range(10)])
    record = {"balanced": compare(x[:3000], y[:3000], test_x, test_y),
              "imbalanced": compare(x[imbalanced], y[imbalanced], test_x, test_y)}
    with open(args.output, "w") as f:
        json.dump(record, f, indent=2)
    print(f"{'train set':<12}{'LogReg':>8}{'lr 0.1':>8}{'sweep':>8}  chosen base lr")
    for name, r in record.items():
        print(f"{name:<12}{r['logistic_regression_top1']:>8.1f}{r['mae_fixed_lr_0.1']['top1']:>8.1f}"
              f"{r['sweep']['top1']:>8.1f}  {r['sweep']['chosen_base_lr']:g}")


if __name__ == "__main__":
    main()
