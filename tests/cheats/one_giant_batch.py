"""RED TEAM: one_giant_batch. Fixed-token mode: the feeder checks the budget before a batch, not the
batch's size, so one request of 8x the token budget in rows is served whole (the budget is not yet
spent). The candidate trains on 8x the tokens; the record's tokens say so, but the run is `ok` and
ranked against honest runs of the same budget."""
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
    rows = 8 * (ctx.max_tokens or 0) // ctx.seq_len or b
    big_x, big_y = next(iter(ctx.batches(rows)))  # one request: the whole of 8 budgets
    for step, (x, y) in enumerate(zip(big_x.split(b), big_y.split(b))):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ctx.log(step=step, loss=loss.item())

    return model
