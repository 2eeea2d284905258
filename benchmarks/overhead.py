"""Training-step overhead of the AttG loss over stock ViTMAE (paper: < 1% extra training time).

One step = forward, backward, AdamW step; ViT-S/16 encoder, MAE's 8x512 decoder, 224 px, batch 16.
AttG and stock steps are interleaved (A B A B ...) so that drifts in machine load hit both equally;
prints the median time of each and the median of the per-pair ratios.

    python benchmarks/overhead.py                       # CPU
    python benchmarks/overhead.py --device cuda --dtype bf16 --steps 50
"""

import argparse
import statistics
import time
from contextlib import nullcontext

import torch
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from modeling_attg_mae import AttGViTMAEConfig, AttGViTMAEForPreTraining

VIT_S16 = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
               image_size=224, patch_size=16, norm_pix_loss=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per model (after 2 warm-up steps)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    stock = ViTMAEForPreTraining(ViTMAEConfig(**VIT_S16)).to(device)
    ours = AttGViTMAEForPreTraining(AttGViTMAEConfig(**VIT_S16)).to(device)
    ours.load_state_dict(stock.state_dict())
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95))
                  for name, m in (("stock", stock), ("attg", ours))}
    pixels = torch.randn(args.batch_size, 3, 224, 224, device=device)
    attention = torch.rand(args.batch_size, 14, 14, device=device)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else nullcontext())

    def step(name):
        model, optimizer = (stock, optimizers["stock"]) if name == "stock" else (ours, optimizers["attg"])
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            out = model(pixels) if name == "stock" else model(pixels, attention_map=attention)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(2):
        step("stock"), step("attg")
    times = {"stock": [], "attg": []}
    ratios = []
    for i in range(args.steps):
        order = ("stock", "attg") if i % 2 == 0 else ("attg", "stock")
        measured = {name: step(name) for name in order}
        for name in order:
            times[name].append(measured[name])
        ratios.append(measured["attg"] / measured["stock"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}, dtype {args.dtype}, ViT-S/16 224px, batch {args.batch_size}, {args.steps} steps each")
    print(f"stock ViTMAEForPreTraining: median {statistics.median(times['stock']) * 1000:.1f} ms/step")
    print(f"AttGViTMAEForPreTraining:   median {statistics.median(times['attg']) * 1000:.1f} ms/step")
    print(f"median ratio AttG / stock: {statistics.median(ratios):.4f} "
          f"(min {min(ratios):.4f}, max {max(ratios):.4f}; target <= 1.01)")


if __name__ == "__main__":
    main()
