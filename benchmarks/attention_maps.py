"""Throughput of every object-discovery method against the bare detector forward on the same batch.

ViT-S/16 at 224 px with random weights (DINO-ViT-S/16 architecture; weights do not change the cost, and the
Hub is not needed), ResNet-50 for Grad-CAM, batch 32. Also TokenCut's graph cut against the official
per-image scipy solver on the same keys. Prints images/s and ratios; nothing is asserted.
`benchmarks/accelerator_campaign.py` times dino and tokencut on a GPU against the same per-image reference.

    python benchmarks/attention_maps.py                 # CPU, short
    python benchmarks/attention_maps.py --device cuda --batch_size 64 --repeats 20
"""

import argparse

import numpy as np
import scipy.linalg
import scipy.ndimage
import torch
from transformers import ResNetConfig, ResNetForImageClassification, ViTConfig, ViTModel

from modeling_attg_mae.object_discovery import DinoAttention, GradCAM, SpectralResidual, TokenCut
from modeling_attg_mae.object_discovery.dino import last_block_query_key
from modeling_attg_mae.object_discovery.tokencut import normalized_cut
from timing import time_call


def timed(fn, repeats, device):
    """Median seconds of `repeats` calls after one warm-up call."""
    return float(np.median(time_call(fn, device, repeats)))


def scipy_tokencut(features, dims, tau=0.2, eps=1e-5):
    """The official per-image algorithm (dense scipy generalized eigensolver), as a baseline."""
    features = features / np.linalg.norm(features, axis=1, keepdims=True)
    A = np.where(features @ features.T > tau, 1.0, eps)
    D = np.diag(A.sum(axis=1))
    _, vectors = scipy.linalg.eigh(D - A, D, subset_by_index=[1, 2])
    vector = vectors[:, 0]
    bipartition = vector > vector.mean()
    seed = np.argmax(np.abs(vector))
    if not bipartition[seed]:
        bipartition = ~bipartition
    objects, _ = scipy.ndimage.label(bipartition.reshape(dims))
    return objects == objects[np.unravel_index(seed, dims)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
    vit = ViTModel(ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                             image_size=224, patch_size=16, qkv_bias=True), add_pooling_layer=False)
    vit = vit.eval().requires_grad_(False).to(device, dtype)
    resnet = ResNetForImageClassification(ResNetConfig(layer_type="bottleneck", depths=[3, 4, 6, 3], num_labels=1000))
    resnet = resnet.eval().requires_grad_(False).to(device, dtype)
    pixel_values = torch.randn(args.batch_size, 3, 224, 224, device=device)
    n = args.batch_size
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"batch {n}, {args.dtype}, median of {args.repeats}")

    def vit_forward():
        with torch.no_grad():
            vit(pixel_values=pixel_values.to(dtype))

    def resnet_forward():
        with torch.no_grad():
            resnet(pixel_values=pixel_values.to(dtype))

    dino, tokencut = DinoAttention(vit, dtype=args.dtype), TokenCut(vit, dtype=args.dtype)
    gradcam, saliency = GradCAM(resnet, dtype=args.dtype), SpectralResidual(device=device)
    gray = torch.rand(n, 64, 64, device=device)

    rows = []
    base_vit = timed(vit_forward, args.repeats, device)
    base_resnet = timed(resnet_forward, args.repeats, device)
    rows.append(("ViT-S/16 forward (baseline)", base_vit, base_vit))
    rows.append(("dino", timed(lambda: dino.compute(pixel_values), args.repeats, device), base_vit))
    rows.append(("tokencut", timed(lambda: tokencut.compute(pixel_values), args.repeats, device), base_vit))
    rows.append(("ResNet-50 forward (baseline)", base_resnet, base_resnet))
    rows.append(("gradcam", timed(lambda: gradcam.compute(pixel_values), args.repeats, device), base_resnet))
    rows.append(("spectral_residual (64 px)", timed(lambda: saliency.compute(gray), args.repeats, device), base_vit))
    print(f"{'method':32s} {'images/s':>10s} {'vs baseline':>12s}")
    for name, seconds, baseline in rows:
        print(f"{name:32s} {n / seconds:10.1f} {baseline / seconds:11.2f}x")

    # the graph cut alone: batched torch vs official per-image scipy, on the same keys
    _, key = last_block_query_key(vit, pixel_values)
    keys = key.transpose(1, 2).reshape(n, key.shape[2], -1)[:, 1:].float()  # (B, 196, 384)
    batched = timed(lambda: normalized_cut(keys, (14, 14)), args.repeats, device)
    keys_np = keys.cpu().double().numpy()
    per_image = timed(lambda: [scipy_tokencut(k, (14, 14)) for k in keys_np], max(1, args.repeats // 2), torch.device("cpu"))
    same = np.mean([(normalized_cut(keys[i:i + 1], (14, 14))[0].bool().cpu().numpy() == scipy_tokencut(keys_np[i], (14, 14))).all()
                    for i in range(n)])
    print(f"graph cut, batched torch ({device}):   {1000 * batched / n:7.2f} ms/image")
    print(f"graph cut, per-image scipy (cpu):      {1000 * per_image / n:7.2f} ms/image  "
          f"-> batched is {per_image / batched:.1f}x faster; same partition on {same:.0%} of images")
    print(f"tokencut end to end vs ViT forward + per-image scipy cut: "
          f"{(base_vit + per_image) / rows[2][1]:.2f}x")


if __name__ == "__main__":
    main()
