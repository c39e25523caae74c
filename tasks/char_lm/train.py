"""
char_lm candidate: a byte-level GPT on a small slice of text (about 1 MB), in a fixed budget.

The data is small, so on a GPU the budget covers many epochs: the model can memorise the training
text, and the score (val_bpb on held-out chapters) rewards what generalises. Regularization
(dropout, weight decay, model size, early decay of the learning rate) matters more than raw speed.

Baseline: nanoGPT's shakespeare-char recipe in one flat file. Pre-LayerNorm transformer, learned
position embeddings, GELU MLP, dropout on embeddings, attention and residual branches, tied input
and output embeddings; AdamW with decoupled weight decay on matrices only; LR warmup then cosine
decay driven by ctx.progress() (the fraction of the budget used), so the schedule fits any budget.

The contract with the harness:
    build_model(cfg) -> nn.Module, built on CPU; model(idx[B, T]) -> logits[B, T, 257] for any
        T <= seq_len, causal, rows independent, in train and eval modes.
    train(ctx) -> the trained nn.Module; its state_dict must load into build_model(cfg).
"""

import math
import time
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------
# Hyperparameters (defaults = the GPU profile's scale; the profile's [config] overrides by name)
# ---------------------------------------------------------------------------

@dataclass
class Hyper:
    # Data (given by the task: 256 bytes + BOS; context in bytes)
    vocab_size: int = 257
    seq_len: int = 256
    # Model
    n_layer: int = 6
    n_embd: int = 384
    n_head: int = 6
    dropout: float = 0.2           # small data: the main defence against memorising the train text
    # Optimization
    batch_size: int = 64           # rows per step
    lr: float = 1e-3               # peak AdamW learning rate
    min_lr_frac: float = 0.1       # final LR as a fraction of the peak
    warmup_frac: float = 0.02      # fraction of the budget spent warming the LR up
    weight_decay: float = 0.1      # decoupled, on matrices only (not on norms, biases, embeddings' pos)
    beta2: float = 0.99            # nanoGPT's char-level value: few tokens per step, noisy gradients
    grad_clip: float = 1.0
    log_every: int = 10            # steps between ctx.log records

    @classmethod
    def from_cfg(cls, cfg):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:  # a typo in task.toml should fail loudly, not silently use the default
            raise KeyError(f"unknown config keys {unknown}; known: {sorted(known)}")
        return cls(**cfg)


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------

class Block(nn.Module):
    def __init__(self, hp):
        super().__init__()
        self.n_head, self.dropout = hp.n_head, hp.dropout
        self.ln1, self.ln2 = nn.LayerNorm(hp.n_embd), nn.LayerNorm(hp.n_embd)
        self.qkv = nn.Linear(hp.n_embd, 3 * hp.n_embd, bias=False)
        self.proj = nn.Linear(hp.n_embd, hp.n_embd, bias=False)
        self.fc = nn.Linear(hp.n_embd, 4 * hp.n_embd, bias=False)
        self.fc_out = nn.Linear(4 * hp.n_embd, hp.n_embd, bias=False)
        self.resid_drop = nn.Dropout(hp.dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        # SDPA with is_causal: the fused kernel applies the causal mask; attention dropout only in training
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))
        return x + self.resid_drop(self.fc_out(F.gelu(self.fc(self.ln2(x)))))


class CharGPT(nn.Module):
    def __init__(self, hp):
        super().__init__()
        self.wte = nn.Embedding(hp.vocab_size, hp.n_embd)
        self.wpe = nn.Embedding(hp.seq_len, hp.n_embd)
        self.drop = nn.Dropout(hp.dropout)
        self.blocks = nn.ModuleList(Block(hp) for _ in range(hp.n_layer))
        self.ln_f = nn.LayerNorm(hp.n_embd)
        self.apply(self._init)
        # GPT-2: residual output projections scaled down by depth, so the residual stream starts small
        for name, p in self.named_parameters():
            if name.endswith(("proj.weight", "fc_out.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * hp.n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx):
        T = idx.shape[1]
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(T, device=idx.device)))
        for block in self.blocks:
            x = block(x)
        # tied output embedding: 257 x n_embd parameters fewer, and a better prior on small data
        return F.linear(self.ln_f(x), self.wte.weight)


def build_model(cfg):
    return CharGPT(Hyper.from_cfg(cfg))


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

def lr_at(hp, progress):
    """Linear warmup, then cosine decay to min_lr_frac · lr at the end of the budget."""
    if progress < hp.warmup_frac:
        return hp.lr * progress / hp.warmup_frac
    t = (progress - hp.warmup_frac) / max(1e-9, 1 - hp.warmup_frac)
    return hp.lr * (hp.min_lr_frac + (1 - hp.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def train(ctx):
    hp = Hyper.from_cfg(ctx.cfg)
    torch.manual_seed(ctx.seed)
    cuda = torch.device(ctx.device).type == "cuda"
    if cuda:
        torch.set_float32_matmul_precision("high")
    model = build_model(ctx.cfg).to(ctx.device)
    # weight decay on 2-D weights only: decaying LayerNorm gains pulls them toward zero for no benefit
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=hp.lr, betas=(0.9, hp.beta2), fused=cuda)

    model.train()
    t0 = time.perf_counter()
    for step, (x, y) in enumerate(ctx.batches(hp.batch_size)):
        for group in opt.param_groups:
            group["lr"] = lr_at(hp, ctx.progress())
        # bf16 autocast on the GPU (tensor cores); fp32 on CPU
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            logits = model(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp.grad_clip)
        opt.step()
        if step % hp.log_every == 0 or ctx.done():
            value = loss.item()  # a sync: only every log_every steps
            if not math.isfinite(value):
                raise FloatingPointError(f"loss is {value} at step {step}")
            ctx.log(step=step, loss=value, lr=opt.param_groups[0]["lr"], wall=round(time.perf_counter() - t0, 1))
        if ctx.done():
            break
    return model
