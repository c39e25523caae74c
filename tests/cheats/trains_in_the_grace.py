"""RED TEAM: trains_in_the_grace. Time mode: the weights may come up to grace_s (5% of the budget, at
least 10 s) after the budget, meant for the last step and the save. Just before the budget ends this
candidate fetches a large batch (the feeder serves any size while the budget lasts), then trains on
it through the grace, stopping a second before the grace ends: 10 s more compute than a 3 s budget
(22% more on gpt_pretrain's 45 s cpu budget, 50% on modular_add's 20 s), recorded as `ok`."""
import time
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["n_embd"]
        self.tok = nn.Embedding(cfg["vocab_size"], d)
        self.pos = nn.Embedding(cfg["seq_len"], d)
        self.blocks = nn.ModuleList(Block(d, cfg["n_head"]) for _ in range(cfg["n_layer"]))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg["vocab_size"], bias=False)
        nn.init.normal_(self.head.weight, std=0.02 / math.sqrt(d))

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def build_model(cfg):
    return TinyGPT(cfg)


def train(ctx):
    model = build_model(ctx.cfg).to(ctx.device)
    opt = torch.optim.AdamW(model.parameters(), lr=ctx.cfg["lr"])
    b = ctx.cfg["batch_size"]

    def step(x, y):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for x, y in ctx.batches(b):
        step(x, y)
        if ctx.time_left() < 0.3:
            break
    stock = next(iter(ctx.batches(200 * b)), None)  # the budget has not ended: served whole
    end = time.perf_counter() + ctx.time_left() + max(10.0, 0.05 * ctx.budget_s) - 1.0
    while stock is not None and time.perf_counter() < end:
        for x, y in zip(stock[0].split(b), stock[1].split(b)):
            step(x, y)
            if time.perf_counter() >= end:
                break
    return model
