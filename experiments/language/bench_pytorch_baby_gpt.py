"""The PyTorch eager baseline for bench_baby_gpt.py: nanoGPT's baby-GPT step, timed the same way.

  python -m experiments.language.bench_pytorch_baby_gpt [--steps=50] [--warmup=10]

Needs only torch (not a jaxssl dependency; `pip install torch==2.13.0` in a
separate venv). A GPT written here to match nanoGPT's model.py in shape and
work: token + learned position embeddings, 4 pre-norm blocks (fused q/k/v
Linear with bias, `scaled_dot_product_attention` with a causal mask, exact
GELU MLP of width 4D), final LayerNorm, output tied to the token embedding,
no dropout; AdamW (lr 1e-3, betas 0.9/0.99, weight decay 0.1 on matrices
only) and gradient clipping at 1.0. One timed iteration = forward, backward,
clip, optimizer step on one random batch of 12 x 64 characters (vocabulary
65), as nanoGPT's train loop does, on --device (default: cuda when there is
one), synchronised before the clock stops. Prints one JSON line with the median
milliseconds per iteration.
"""

import argparse
import json
import os
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.attention_norm, self.mlp_norm = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.attention_out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        batch, length, width = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.heads, width // self.heads).transpose(1, 2)
                   for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attention_out(y.transpose(1, 2).reshape(batch, length, width))
        return x + self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    """tokens int64 [B, T] -> logits float32 [B, T, vocab]."""

    def __init__(self, vocab: int, context: int, width: int, depth: int, heads: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.position_embedding = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width)

    def forward(self, tokens):
        x = self.token_embedding(tokens) + self.position_embedding(
            torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x) @ self.token_embedding.weight.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    vocab, context, batch = 65, 64, 12
    model = GPT(vocab, context, width=128, depth=4, heads=4).to(args.device)
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1},
                                   {"params": others, "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.99))
    data = torch.randint(vocab, (args.warmup + args.steps, batch, context + 1), device=args.device)
    times = []
    for rows in data:
        start = time.perf_counter()
        logits = model(rows[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab), rows[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - start))
    print(json.dumps({
        "framework": f"torch {torch.__version__} eager", "device": args.device,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
        "parameters": sum(p.numel() for p in model.parameters()), "steps": args.steps,
        "step_ms_median": round(statistics.median(times[args.warmup:]), 2)}))


if __name__ == "__main__":
    main()
