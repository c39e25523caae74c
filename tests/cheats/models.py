"""Toy candidates for tests/test_checks.py: honest causal transformers and cheats built from them.

Each cheat changes one thing of the honest model, the way an agent told to "make the score better"
might, and names in its docstring the check that must catch it. This file is also an honest
candidate *source* (only torch and math imports), which the source policy must accept.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

CFG = {"vocab_size": 2048, "seq_len": 64, "n_layer": 2, "n_embd": 128, "n_head": 4}


class Block(nn.Module):
    def __init__(self, d, heads, dropout=0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(dropout))
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def causal(self, B, T):
        """Whether attention is masked; the cheats override this."""
        return True

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal(B, T),
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """Honest: token + position embeddings, pre-norm blocks with causal SDPA, linear head."""
    block = Block

    def __init__(self, cfg, dropout=0.0):
        super().__init__()
        d, V = cfg.get("n_embd", 128), cfg["vocab_size"]
        self.tok = nn.Embedding(V, d)
        self.pos = nn.Embedding(cfg["seq_len"], d)
        heads, layers = cfg.get("n_head", 4), cfg.get("n_layer", 2)
        self.blocks = nn.ModuleList(self.block(d, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, V, bias=False)
        nn.init.normal_(self.head.weight, std=0.02 / math.sqrt(d))

    def hidden(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.ln(x)

    def forward(self, idx):
        return self.head(self.hidden(idx))


class ZeroInitGPT(TinyGPT):
    """Honest, initialised as autoresearch does: output projections zero, head nearly zero, so at
    init the logits depend on the current token only."""

    def __init__(self, cfg, dropout=0.0):
        super().__init__(cfg, dropout)
        for block in self.blocks:
            nn.init.zeros_(block.proj.weight)
            nn.init.zeros_(block.mlp[2].weight)
        nn.init.normal_(self.head.weight, std=0.001)


class DropoutGPT(TinyGPT):
    """Honest, with dropout in attention and MLP: train mode is random, eval mode is not."""

    def __init__(self, cfg):
        super().__init__(cfg, dropout=0.1)


def _with_mask(rule):
    """A TinyGPT whose attention is causal only when rule(block, B, T) holds."""
    block = type("CheatBlock", (Block,), {"causal": lambda self, B, T: rule(self, B, T)})
    return type("CheatGPT", (TinyGPT,), {"block": block})


NonCausal = _with_mask(lambda self, B, T: False)                      # causality
NonCausalInEvalOnly = _with_mask(lambda self, B, T: self.training)    # causality (eval mode)
CausalOnlyAtBatch1 = _with_mask(lambda self, B, T: B == 1)            # causality (B > 1)
CausalOnlyForShortT = _with_mask(lambda self, B, T: T <= 16)          # causality (long T)
CausalOnlyForEvenT = _with_mask(lambda self, B, T: T % 2 == 0)        # causality (found by search only)


class HiddenLeak(ZeroInitGPT):
    """Non-causal attention behind zero-initialised projections: invisible at init (causality
    must perturb the weights to see it)."""
    block = NonCausal.block


class BatchMeanLeak(TinyGPT):
    """Mixes the batch mean into every row (batch_independence)."""

    def forward(self, idx):
        h = self.hidden(idx)
        return self.head(h + h.mean(0, keepdim=True))


class ReadsNextToken(TinyGPT):
    """Puts a large logit on the next input token: it reads the answer (initial_loss, causality)."""

    def forward(self, idx):
        nxt = torch.roll(idx, -1, dims=1)
        return super().forward(idx) + 20.0 * F.one_hot(nxt, self.head.out_features)


class Overconfident(TinyGPT):
    """Logits scaled up 50×: far from uniform at init, which initial_loss passes with a warning."""

    def forward(self, idx):
        return 50.0 * torch.tanh(super().forward(idx) * 100.0)


class ConstantLogits(nn.Module):
    """Ignores its input: one learned logit vector for every position (overfit_batch)."""

    def __init__(self, cfg):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(cfg["vocab_size"]))

    def forward(self, idx):
        return self.bias.expand(*idx.shape, -1)


class PositionOnly(nn.Module):
    """Ignores the token values, uses only positions (overfit_batch)."""

    def __init__(self, cfg):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(cfg["seq_len"], cfg["vocab_size"]))

    def forward(self, idx):
        return self.table[: idx.shape[1]].expand(idx.shape[0], -1, -1)


class LastPositionOnly(TinyGPT):
    """Returns logits [B, V] for the last position only (logits_shape)."""

    def forward(self, idx):
        return super().forward(idx)[:, -1]


class NaNLogits(TinyGPT):
    """One NaN logit per row (finite)."""

    def forward(self, idx):
        logits = super().forward(idx)
        return torch.cat([logits[..., :1] * float("nan"), logits[..., 1:]], dim=-1)


class Huge(TinyGPT):
    """An 8× wider model (param_limit under a limit the honest model meets)."""

    def __init__(self, cfg):
        super().__init__({**cfg, "n_embd": 8 * cfg.get("n_embd", 128)})


class CarriesState(TinyGPT):
    """Remembers the previous batch and adds it to the next call's logits (deterministic_eval)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.last = None

    def forward(self, idx):
        logits = super().forward(idx)
        if self.last is not None and self.last.shape == logits.shape:
            logits = logits + 0.1 * self.last
        self.last = logits.detach()
        return logits


class SharperInEval(TinyGPT):
    """Computes a different function in eval mode than the one it trains (eval_train_consistency)."""

    def forward(self, idx):
        logits = super().forward(idx)
        return logits if self.training else 3.0 * logits


class NoParameters(nn.Module):
    """Uniform logits and nothing to train (overfit_batch)."""

    def __init__(self, cfg):
        super().__init__()
        self.vocab = cfg["vocab_size"]

    def forward(self, idx):
        return torch.zeros(*idx.shape, self.vocab)


def build_model(cfg):
    return TinyGPT(cfg)


def train(ctx):
    model = build_model(ctx.cfg).to(ctx.device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step, (x, y) in enumerate(ctx.batches(8)):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ctx.log(step=step, loss=loss.item())
        if ctx.done():
            break
    return model
