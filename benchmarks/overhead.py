"""Training-step overhead of the AttG loss over stock ViTMAE (paper: < 1% extra training time).

One step = forward, backward, AdamW step; ViT-S/16 encoder, MAE's 8x512 decoder, 224 px, batch 16. Both models
start from the same weights and get the same masking noise every step. AttG and stock steps are interleaved
(A B A B ...) so that drifts in machine load hit both equally; prints the median time of each and the median of
the per-pair ratios. `benchmarks/accelerator_campaign.py` times the same step at ViT-B / ViT-L on a GPU.

    python benchmarks/overhead.py                       # CPU
    python benchmarks/overhead.py --device cuda --dtype bf16 --steps 50
"""

import argparse
import statistics
from contextlib import nullcontext

import torch
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from modeling_attg_mae import AttGViTMAEConfig, AttGViTMAEForPreTraining
from timing import time_interleaved

VIT_S16 = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
               image_size=224, patch_size=16, norm_pix_loss=True)


def paired_models(config: dict, device: torch.device) -> dict[str, torch.nn.Module]:
    """`{"stock": ViTMAEForPreTraining, "attg": AttGViTMAEForPreTraining}` (attg guidance), same weights."""
    torch.manual_seed(0)
    stock = ViTMAEForPreTraining(ViTMAEConfig(**config)).to(device)
    attg = AttGViTMAEForPreTraining(AttGViTMAEConfig(**config, attg_guidance="attg")).to(device)
    attg.load_state_dict(stock.state_dict())
    return {"stock": stock, "attg": attg}


def step_inputs(config: dict, batch_size: int, device: torch.device, seed: int = 0) -> dict[str, dict]:
    """Each side's inputs: the same pixels and masking noise; AttG also gets a map on the patch grid."""
    generator = torch.Generator().manual_seed(seed)
    size, patch = config["image_size"], config["patch_size"]
    grid = size // patch
    pixels = torch.randn(batch_size, 3, size, size, generator=generator).to(device)
    noise = torch.rand(batch_size, grid * grid, generator=generator).to(device)  # (B, N): MAE's masking noise
    attention = torch.rand(batch_size, grid, grid, generator=generator).to(device)  # (B, h, w)
    stock = {"pixel_values": pixels, "noise": noise}
    return {"stock": stock, "attg": {**stock, "attention_map": attention}}


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, inputs: dict, autocast=None):
    """`step()`: forward (under `autocast`), backward, optimizer step, gradients cleared: one training step."""
    autocast = autocast if autocast is not None else nullcontext()

    def step():
        with autocast:
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def adamw(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per model (after 2 warm-up steps)")
    args = parser.parse_args()
    device = torch.device(args.device)
    models = paired_models(VIT_S16, device)
    inputs = step_inputs(VIT_S16, args.batch_size, device)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else nullcontext())
    steps = {name: training_step(model, adamw(model), inputs[name], autocast) for name, model in models.items()}
    times = time_interleaved(steps, device, repeats=args.steps, warmup=2)
    ratios = [a / s for a, s in zip(times["attg"], times["stock"])]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}, dtype {args.dtype}, ViT-S/16 224px, batch {args.batch_size}, {args.steps} steps each")
    print(f"stock ViTMAEForPreTraining: median {statistics.median(times['stock']) * 1000:.1f} ms/step")
    print(f"AttGViTMAEForPreTraining:   median {statistics.median(times['attg']) * 1000:.1f} ms/step")
    print(f"median ratio AttG / stock: {statistics.median(ratios):.4f} "
          f"(min {min(ratios):.4f}, max {max(ratios):.4f}; target <= 1.01)")


if __name__ == "__main__":
    main()
