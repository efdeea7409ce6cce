"""PyTorch eager train steps for vs_pytorch.py (runs in a separate environment with torch).

  TORCH_PYTHON -m experiments.benchmarks.torch_steps --workload=simclr|mae|baby_gpt [--bfloat16]

Not a jaxssl dependency and never imported by its tests: install
requirements-bench.txt into its own virtualenv. A worker: it builds the
workload, runs `--warmup` steps, prints `READY {json}` and then, for each
line N read from stdin, runs N steps and prints a JSON list of their wall
seconds (each step synchronised). An empty line or EOF ends it. `--bfloat16`
runs each step's forward pass and loss under CPU autocast to bfloat16 (the
backward pass follows the forward's dtypes; parameters stay float32).
Also reports its float32 and bfloat16 matmul rates (`matmul_flops`), after the
warm-up steps.

The workloads match vs_pytorch.py's jaxssl ones in shapes and work:

  simclr    ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool), the
            3-layer SimCLR projection head (512, 512, 128; BN + ReLU between),
            NT-Xent at temperature 0.5 over 2 x 128 views, SGD with momentum.
            Each step draws the views of 128 random uint8 32x32 images with
            torchvision's SimCLR CIFAR transforms (RandomResizedCrop(0.08-1),
            flip, ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale p 0.2),
            image by image in this process, as a DataLoader with no workers does.
  mae       MAE with a ViT-Tiny/4 encoder on 32 px (192 wide, 12 blocks, 3 heads,
            64 patches, 75% masked: it sees 16 of them), a 2-block 128-wide
            decoder (4 heads), normalised-pixel MSE on the masked patches;
            AdamW. Batch 128, random images, a new random mask per step.
  baby_gpt  nanoGPT's CPU "baby GPT": 4 blocks, 4 heads, width 128, context 64,
            batch 12, vocabulary 65, tied output, AdamW + clipping at 1.0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torchvision.transforms import v2


def update(optimizer, loss: torch.Tensor, clip_params=None) -> torch.Tensor:
    """One optimizer step on `loss` (gradients clipped to norm 1 over `clip_params` if given)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_params is not None:
        torch.nn.utils.clip_grad_norm_(clip_params, 1.0)
    optimizer.step()
    return loss


# ------------------------------------------------------------------ SimCLR
def simclr_model() -> nn.Module:
    net = torchvision.models.resnet18()
    net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Sequential(
        nn.Linear(512, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(),
        nn.Linear(512, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(),
        nn.Linear(512, 128))
    return net


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """z [2N, D], rows i and i + N are the two views of one image."""
    z = F.normalize(z, dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    n = z.shape[0] // 2
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(logits, targets)


def simclr_workload(autocast, batch: int = 128):
    model = simclr_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    augment = v2.Compose([
        v2.RandomResizedCrop(32, scale=(0.08, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([0.5] * 3, [0.5] * 3)])
    images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8)

    def step():
        views = torch.stack([augment(image) for image in images] +
                            [augment(image) for image in images])
        with autocast():
            loss = nt_xent(model(views), 0.5)
        return update(optimizer, loss)
    return step


# --------------------------------------------------------------------- MAE
class Block(nn.Module):
    """Pre-norm Transformer block; `causal` for the GPT."""

    def __init__(self, width: int, heads: int, causal: bool = False):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.attention_norm, self.mlp_norm = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.attention_out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        batch, length, width = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.heads, width // self.heads).transpose(1, 2)
                   for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        x = x + self.attention_out(y.transpose(1, 2).reshape(batch, length, width))
        return x + self.mlp(self.mlp_norm(x))


class MAE(nn.Module):
    def __init__(self, patch=4, size=32, width=192, depth=12, heads=3,
                 decoder_width=128, decoder_depth=2, decoder_heads=4):
        super().__init__()
        self.patch, self.patches = patch, (size // patch) ** 2
        self.embed = nn.Conv2d(3, width, patch, patch)
        self.position = nn.Parameter(torch.randn(1, self.patches, width) * 0.02)
        self.encoder = nn.Sequential(*[Block(width, heads) for _ in range(depth)], nn.LayerNorm(width))
        self.decoder_embed = nn.Linear(width, decoder_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_width))
        self.decoder_position = nn.Parameter(torch.randn(1, self.patches, decoder_width) * 0.02)
        self.decoder = nn.Sequential(*[Block(decoder_width, decoder_heads)
                                       for _ in range(decoder_depth)], nn.LayerNorm(decoder_width))
        self.predict = nn.Linear(decoder_width, patch * patch * 3)

    def forward(self, images, mask_ratio=0.75):
        batch = images.shape[0]
        x = self.embed(images).flatten(2).transpose(1, 2) + self.position
        keep = int(self.patches * (1 - mask_ratio))
        order = torch.rand(batch, self.patches).argsort(dim=1)
        visible = order[:, :keep]
        x = self.encoder(torch.gather(x, 1, visible[..., None].expand(-1, -1, x.shape[2])))
        decoded = self.decoder_embed(x)  # bfloat16 under autocast
        y = self.mask_token.expand(batch, self.patches, -1).to(decoded.dtype).clone()
        y.scatter_(1, visible[..., None].expand(-1, -1, y.shape[2]), decoded)
        predicted = self.predict(self.decoder(y + self.decoder_position))
        target = F.unfold(images, self.patch, stride=self.patch).transpose(1, 2)
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        masked = torch.ones(batch, self.patches).scatter_(1, visible, 0.0)
        return (((predicted - target) ** 2).mean(-1) * masked).sum() / masked.sum()


def mae_workload(autocast, batch: int = 128):
    model = MAE()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
    images = torch.rand(batch, 3, 32, 32) * 2 - 1

    def step():
        with autocast():
            loss = model(images)
        return update(optimizer, loss)
    return step


# ---------------------------------------------------------------- baby GPT
class GPT(nn.Module):
    """tokens int64 [B, T] -> logits float32 [B, T, vocab], output tied to the embedding."""

    def __init__(self, vocab: int, context: int, width: int, depth: int, heads: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.position_embedding = nn.Embedding(context, width)
        self.blocks = nn.Sequential(*[Block(width, heads, causal=True) for _ in range(depth)])
        self.final_norm = nn.LayerNorm(width)

    def forward(self, tokens):
        x = self.token_embedding(tokens) + self.position_embedding(
            torch.arange(tokens.shape[1], device=tokens.device))
        return self.final_norm(self.blocks(x)) @ self.token_embedding.weight.T


def baby_gpt_workload(autocast, vocab: int = 65, context: int = 64, batch: int = 12):
    model = GPT(vocab, context, width=128, depth=4, heads=4)
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1},
                                   {"params": others, "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.99))

    def step():
        rows = torch.randint(vocab, (batch, context + 1))
        with autocast():
            logits = model(rows[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, vocab), rows[:, 1:].reshape(-1))
        return update(optimizer, loss, model.parameters())
    return step


WORKLOADS = {"simclr": simclr_workload, "mae": mae_workload, "baby_gpt": baby_gpt_workload}


def matmul_flops(dtype: torch.dtype, size: int = 1024, repeats: int = 10) -> float:
    """Achieved matmul FLOP/s, measured as jaxssl.logging.measured_matmul_flops does: the
    fastest of `repeats` [size, size] products of `dtype` after two untimed ones."""
    a = torch.ones(size, size, dtype=dtype)
    for _ in range(2):
        a @ a
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--bfloat16", action="store_true",
                        help="forward pass and loss under CPU autocast to bfloat16")
    args = parser.parse_args()
    torch.manual_seed(0)
    step = WORKLOADS[args.workload](
        lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bfloat16))
    for _ in range(args.warmup):
        step()
    print("READY " + json.dumps({"framework": f"torch {torch.__version__} eager",
                                 "threads": torch.get_num_threads(),
                                 "cpu_count": os.cpu_count(),
                                 "matmul_flops": {"float32": matmul_flops(torch.float32),
                                                  "bfloat16": matmul_flops(torch.bfloat16)}}),
          flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        times = []
        for _ in range(int(line)):
            start = time.perf_counter()
            step().item()
            times.append(time.perf_counter() - start)
        print(json.dumps(times), flush=True)


if __name__ == "__main__":
    main()
