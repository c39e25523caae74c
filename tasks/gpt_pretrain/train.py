"""
gpt_pretrain candidate: pretrain a small GPT in a fixed budget. Single device, single file.

Our own port of karpathy/autoresearch's train.py (itself cherry-picked from nanochat): GPT with RoPE,
QK-norm, ReLU² MLP, value embeddings with gates, residual and x0 lambdas, logit softcap, the "SSSL"
sliding-window pattern; Muon (Polar Express, NorMuon, cautious weight decay) + AdamW; schedules
driven by the fraction of the budget used. Differences from upstream, and why:
- Attention goes through PyTorch only (FlexAttention when compiled on CUDA, SDPA otherwise), so it
  runs offline on any recent GPU and on CPU; upstream downloads an FA3 kernel from the hub.
- Any GPU: the harness's ctx.settings say how to execute on this device (device.py): the device
  batch that fits its memory (grad accumulation keeps the total batch, so the optimization is the
  same), bf16 on capability >= 8.0 else fp16 with loss scaling, FlexAttention or SDPA, and the
  device's peak FLOP/s for MFU (None: not logged, the harness reports "unknown").
- The harness owns data, clock and evaluation: this file sees only `ctx` (batches, progress, log).
  It may import nothing beyond the task's allowed modules (torch and a few stdlib ones).
- Hyperparameters: the defaults below are upstream's (H100 scale); the task profile's [config]
  table (cfg) overrides any of them by name, e.g. a tiny model for the CPU profile.

The contract with the harness:
    build_model(cfg) -> nn.Module, built on CPU; model(idx[B, T]) -> logits[B, T, V] (float,
        softcapped) for any T <= seq_len, causal, rows independent, in train and eval modes.
    train(ctx) -> the trained nn.Module (not the torch.compile wrapper); its state_dict must load
        into build_model(cfg). The harness evaluates it afterwards in a fresh process.
"""

import math
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention


# ---------------------------------------------------------------------------
# Hyperparameters (defaults = upstream autoresearch on one H100; cfg overrides by field name)
# ---------------------------------------------------------------------------

@dataclass
class Hyper:
    # Data (given by the task; the harness always puts them in cfg)
    vocab_size: int = 8192
    seq_len: int = 2048
    # Model architecture
    depth: int = 8                  # number of transformer layers
    aspect_ratio: int = 64          # model_dim = depth * aspect_ratio, rounded up to head_dim
    head_dim: int = 128             # target head dimension for attention
    window_pattern: str = "SSSL"    # per layer, repeated: L = full context, S = half; last layer L
    softcap: float = 15.0           # logits = softcap * tanh(logits / softcap)
    # Optimization
    total_batch_size: int = 2**19   # tokens per optimizer step (grad accumulation makes up the rest)
    device_batch_size: int = 128    # rows per forward/backward; at most this, ctx.settings may fit fewer
    embedding_lr: float = 0.6       # token and value embeddings (Adam)
    unembedding_lr: float = 0.004   # lm_head (Adam)
    matrix_lr: float = 0.04         # transformer matrices (Muon)
    scalar_lr: float = 0.5          # per-layer residual / x0 lambdas (Adam)
    weight_decay: float = 0.2       # cautious weight decay of the Muon matrices, decayed to 0
    adam_beta1: float = 0.8
    adam_beta2: float = 0.95
    muon_momentum_warmup_steps: int = 300  # Muon momentum goes 0.85 -> 0.95 over these steps
    warmup_ratio: float = 0.0       # fraction of the budget for LR warmup
    warmdown_ratio: float = 0.5     # fraction of the budget for the linear LR warmdown
    final_lr_frac: float = 0.0      # final LR as a fraction of the initial LR
    # Execution
    compile: bool = True            # torch.compile the model and the optimizer steps (CUDA only)

    @classmethod
    def from_cfg(cls, cfg):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:  # a typo in task.toml should fail loudly, not silently use the default
            raise KeyError(f"unknown config keys {unknown}; known: {sorted(known)}")
        return cls(**cfg)

    @property
    def model_dim(self):
        base = self.depth * self.aspect_ratio
        return ((base + self.head_dim - 1) // self.head_dim) * self.head_dim

    @property
    def n_head(self):
        return self.model_dim // self.head_dim


VE_GATE_CHANNELS = 32            # the value-embedding gate looks at this many input channels


# ---------------------------------------------------------------------------
# GPT model
# ---------------------------------------------------------------------------

def norm(x):
    # parameter-free RMSNorm everywhere (embeddings, pre-block, QK, final)
    return F.rms_norm(x, (x.size(-1),))


def has_ve(layer_idx, n_layer):
    """Value embeddings on alternating layers, the last one always included."""
    return layer_idx % 2 == (n_layer - 1) % 2


def apply_rotary_emb(x, cos, sin):
    # x: [B, T, H, D]; rotate the two halves of the head dimension
    d = x.shape[3] // 2
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # bf16 under autocast, fp32 on CPU
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos], 3)


def window_mask(T, window, device):
    """Boolean [T, T] mask for SDPA: query i sees key j iff 0 <= i - j <= window (FA3's (window, 0))."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    return (j <= i) & (i - j <= window)


def sliding_window_block_mask(window, T, device):
    """FlexAttention block mask of the same rule, so that the compiled kernel skips empty blocks."""
    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx <= window)
    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=T, KV_LEN=T, device=device)


class CausalSelfAttention(nn.Module):
    def __init__(self, hp, layer_idx):
        super().__init__()
        self.n_head, self.head_dim = hp.n_head, hp.head_dim
        dim = hp.model_dim
        self.c_q = nn.Linear(dim, dim, bias=False)
        self.c_k = nn.Linear(dim, dim, bias=False)
        self.c_v = nn.Linear(dim, dim, bias=False)
        self.c_proj = nn.Linear(dim, dim, bias=False)
        self.ve_gate = nn.Linear(VE_GATE_CHANNELS, self.n_head, bias=False) if has_ve(layer_idx, hp.depth) else None

    def forward(self, x, ve, cos_sin, attn):
        B, T, C = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        # Value residual (ResFormer): mix in the token's value embedding with a per-head gate that
        # depends on the input; the gate starts at 2 * sigmoid(0) = 1, i.e. neutral
        if ve is not None:
            gate = 2 * torch.sigmoid(self.ve_gate(x[..., :VE_GATE_CHANNELS]))
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_head, self.head_dim).to(v.dtype)
        cos, sin = cos_sin
        q, k = apply_rotary_emb(q, cos, sin), apply_rotary_emb(k, cos, sin)
        q, k = norm(q), norm(k)  # QK-norm keeps attention logits bounded
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
        y = attn(q, k, v)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, hp):
        super().__init__()
        self.c_fc = nn.Linear(hp.model_dim, 4 * hp.model_dim, bias=False)
        self.c_proj = nn.Linear(4 * hp.model_dim, hp.model_dim, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())  # ReLU²


class Block(nn.Module):
    def __init__(self, hp, layer_idx):
        super().__init__()
        self.attn = CausalSelfAttention(hp, layer_idx)
        self.mlp = MLP(hp)

    def forward(self, x, ve, cos_sin, attn):
        x = x + self.attn(norm(x), ve, cos_sin, attn)
        x = x + self.mlp(norm(x))
        return x


class GPT(nn.Module):
    def __init__(self, hp):
        super().__init__()
        self.hp = hp
        self.window_sizes = self._window_sizes(hp)
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(hp.vocab_size, hp.model_dim),
            "h": nn.ModuleList([Block(hp, i) for i in range(hp.depth)]),
        })
        self.lm_head = nn.Linear(hp.model_dim, hp.vocab_size, bias=False)
        # x_i <- resid_lambdas[i] * x_i + x0_lambdas[i] * x0 before every block
        self.resid_lambdas = nn.Parameter(torch.ones(hp.depth))
        self.x0_lambdas = nn.Parameter(torch.zeros(hp.depth))
        self.value_embeds = nn.ModuleDict({
            str(i): nn.Embedding(hp.vocab_size, hp.model_dim)
            for i in range(hp.depth) if has_ve(i, hp.depth)
        })
        # Rotary tables are buffers, not state: recomputed by build_model, not saved with the weights
        cos, sin = self._rotary(hp.seq_len, hp.head_dim)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        # FlexAttention block masks {window: BlockMask} for T = seq_len, set by train() on CUDA before
        # compiling. Empty (build_model, evaluation, checks): attention goes through SDPA.
        self.block_masks = {}

    @torch.no_grad()
    def init_weights(self):
        dim = self.hp.model_dim
        nn.init.normal_(self.transformer.wte.weight, mean=0.0, std=1.0)
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.001)  # logits ~ 0: initial loss ~ ln V
        s = 3**0.5 * dim**-0.5  # uniform with the std of N(0, 1/dim)
        for block in self.transformer.h:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(lin.weight, -s, s)
            nn.init.zeros_(block.attn.c_proj.weight)  # every block starts as the identity
            nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                nn.init.zeros_(block.attn.ve_gate.weight)
        self.resid_lambdas.fill_(1.0)
        self.x0_lambdas.fill_(0.1)
        for ve in self.value_embeds.values():
            nn.init.uniform_(ve.weight, -s, s)

    @staticmethod
    def _rotary(seq_len, head_dim, base=10000):
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
        return freqs.cos()[None, :, None, :], freqs.sin()[None, :, None, :]  # [1, T, 1, D/2]

    @staticmethod
    def _window_sizes(hp):
        pattern = hp.window_pattern.upper()
        assert pattern and all(c in "SL" for c in pattern), f"bad window_pattern {hp.window_pattern!r}"
        long_window, short_window = hp.seq_len, hp.seq_len // 2
        sizes = [long_window if pattern[i % len(pattern)] == "L" else short_window for i in range(hp.depth)]
        sizes[-1] = long_window  # the last layer always sees the full context
        return sizes

    def _attention_fns(self, T, device):
        """One attention function per distinct window. Compiled on CUDA with block masks built for
        this T: FlexAttention. Otherwise SDPA: plain causal (flash kernel) when the window covers
        the whole sequence (window >= T - 1, e.g. every short check input), an explicit boolean mask
        when it does not."""
        fns = {}
        for w in sorted(set(self.window_sizes)):
            bm = self.block_masks.get(w)
            if bm is not None and torch.compiler.is_compiling() and bm.seq_lengths == (T, T):
                fns[w] = lambda q, k, v, bm=bm: flex_attention(q, k, v, block_mask=bm)
            elif w >= T - 1:
                fns[w] = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                mask = window_mask(T, w, device)
                fns[w] = lambda q, k, v, mask=mask: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return fns

    def estimate_flops(self):
        """FLOPs per token, forward + backward: 6 per matmul weight + attention (as upstream)."""
        nparams = sum(p.numel() for p in self.parameters())
        exclude = (self.transformer.wte.weight.numel() + sum(ve.weight.numel() for ve in self.value_embeds.values())
                   + self.resid_lambdas.numel() + self.x0_lambdas.numel())
        h, q, t = self.hp.n_head, self.hp.head_dim, self.hp.seq_len
        attn = sum(12 * h * q * min(w, t) for w in self.window_sizes)
        return 6 * (nparams - exclude) + attn

    def forward(self, idx, targets=None):
        B, T = idx.size()
        assert T <= self.cos.size(1), f"sequence length {T} > seq_len {self.cos.size(1)}"
        cos_sin = self.cos[:, :T], self.sin[:, :T]
        attn = self._attention_fns(T, idx.device)
        x = norm(self.transformer.wte(idx))
        x0 = x
        for i, block in enumerate(self.transformer.h):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
            x = block(x, ve, cos_sin, attn[self.window_sizes[i]])
        x = norm(x)
        logits = self.lm_head(x).float()
        logits = self.hp.softcap * torch.tanh(logits / self.hp.softcap)
        if targets is not None:
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits


def build_model(cfg):
    model = GPT(Hyper.from_cfg(cfg))
    model.init_weights()
    return model


# ---------------------------------------------------------------------------
# Optimizer: Muon for the transformer matrices, AdamW for the rest
# ---------------------------------------------------------------------------

# Polar Express: per-iteration coefficients of the odd polynomial that drives the singular values
# towards 1 faster than fixed Newton-Schulz coefficients (as upstream)
POLAR_EXPRESS_COEFFS = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def adamw_step(p, grad, exp_avg, exp_avg_sq, step_t, lr_t, beta1_t, beta2_t, eps_t, wd_t):
    p.mul_(1 - lr_t * wd_t)
    exp_avg.lerp_(grad, 1 - beta1_t)
    exp_avg_sq.lerp_(grad.square(), 1 - beta2_t)
    bias1 = 1 - beta1_t ** step_t
    bias2 = 1 - beta2_t ** step_t
    denom = (exp_avg_sq / bias2).sqrt() + eps_t
    p.add_(exp_avg / denom * (-lr_t / bias1))


def muon_step(stacked_grads, stacked_params, momentum_buffer, second_momentum_buffer,
              momentum_t, lr_t, wd_t, beta2_t, ns_steps: int, red_dim: int, ortho_dtype: torch.dtype):
    # Nesterov momentum
    momentum = momentum_t.to(stacked_grads.dtype)
    momentum_buffer.lerp_(stacked_grads, 1 - momentum)
    g = stacked_grads.lerp_(momentum_buffer, momentum)
    # Polar Express orthogonalization (bf16 on GPU as upstream; fp32 on CPU, where bf16 is no faster)
    X = g.to(ortho_dtype)
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * 1.02 + 1e-6)
    if g.size(-2) > g.size(-1):
        for a, b, c in POLAR_EXPRESS_COEFFS[:ns_steps]:
            A = X.mT @ X
            X = a * X + X @ (b * A + c * (A @ A))
    else:
        for a, b, c in POLAR_EXPRESS_COEFFS[:ns_steps]:
            A = X @ X.mT
            X = a * X + (b * A + c * (A @ A)) @ X
    g = X
    # NorMuon: normalise each row (or column) by a running second moment, then restore the
    # overall norm, so that no neuron's update dominates
    beta2 = beta2_t.to(g.dtype)
    v_mean = g.float().square().mean(dim=red_dim, keepdim=True)
    red_dim_size = g.size(red_dim)
    v_norm = (v_mean.sum(dim=(-2, -1), keepdim=True) * red_dim_size).sqrt()
    second_momentum_buffer.lerp_(v_mean.to(second_momentum_buffer.dtype), 1 - beta2)
    step_size = second_momentum_buffer.clamp_min(1e-10).rsqrt()
    v_norm_new = ((v_mean * red_dim_size) * step_size.float().square()).sum(dim=(-2, -1), keepdim=True).sqrt()
    g = g * (step_size * (v_norm / v_norm_new.clamp_min(1e-10))).to(g.dtype)
    # Cautious weight decay: decay only where the update and the weight agree in sign
    lr, wd = lr_t.to(g.dtype), wd_t.to(g.dtype)
    mask = (g * stacked_params) >= 0
    stacked_params.sub_(lr * g + lr * wd * stacked_params * mask)


class MuonAdamW(torch.optim.Optimizer):
    """One optimizer, two kinds of groups: 'muon' (2-D matrices of one shape, stepped stacked) and
    'adamw'. Hyperparameters go into 0-D CPU tensors so that a compiled step does not recompile
    when a scheduled value changes."""

    def __init__(self, param_groups, compiled, ortho_dtype):
        super().__init__(param_groups, defaults={})
        self.ortho_dtype = ortho_dtype
        self._adamw = torch.compile(adamw_step, dynamic=False, fullgraph=True) if compiled else adamw_step
        self._muon = torch.compile(muon_step, dynamic=False, fullgraph=True) if compiled else muon_step
        t = lambda: torch.tensor(0.0, dtype=torch.float32, device="cpu")
        self._adamw_t = {k: t() for k in ("step", "lr", "beta1", "beta2", "eps", "wd")}
        self._muon_t = {k: t() for k in ("momentum", "lr", "wd", "beta2")}

    def _step_adamw(self, group):
        a = self._adamw_t
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            a["step"].fill_(state["step"])
            a["lr"].fill_(group["lr"])
            a["beta1"].fill_(group["betas"][0])
            a["beta2"].fill_(group["betas"][1])
            a["eps"].fill_(group["eps"])
            a["wd"].fill_(group["weight_decay"])
            self._adamw(p, p.grad, state["exp_avg"], state["exp_avg_sq"],
                        a["step"], a["lr"], a["beta1"], a["beta2"], a["eps"], a["wd"])

    def _step_muon(self, group):
        params = group["params"]
        p = params[0]
        state = self.state[p]
        shape = p.shape
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros(len(params), *shape, dtype=p.dtype, device=p.device)
            v_shape = (len(params), shape[-2], 1) if shape[-2] >= shape[-1] else (len(params), 1, shape[-1])
            state["second_momentum_buffer"] = torch.zeros(v_shape, dtype=p.dtype, device=p.device)
        red_dim = -1 if shape[-2] >= shape[-1] else -2
        stacked_grads = torch.stack([q.grad for q in params])
        stacked_params = torch.stack(params)
        m = self._muon_t
        m["momentum"].fill_(group["momentum"])
        m["beta2"].fill_(group["beta2"])
        m["lr"].fill_(group["lr"] * max(1.0, shape[-2] / shape[-1]) ** 0.5)  # tall matrices step more
        m["wd"].fill_(group["weight_decay"])
        self._muon(stacked_grads, stacked_params, state["momentum_buffer"], state["second_momentum_buffer"],
                   m["momentum"], m["lr"], m["wd"], m["beta2"], group["ns_steps"], red_dim, self.ortho_dtype)
        torch._foreach_copy_(params, list(stacked_params.unbind(0)))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            if group["kind"] == "adamw":
                self._step_adamw(group)
            else:
                self._step_muon(group)


def setup_optimizer(model, hp, compiled, ortho_dtype):
    matrix_params = list(model.transformer.h.parameters())
    # AdamW LRs were tuned at width 768: scale them by 1/sqrt(width / 768), as upstream
    scale = (hp.model_dim / 768) ** -0.5
    betas = (hp.adam_beta1, hp.adam_beta2)
    adamw = lambda params, lr, betas=betas: dict(kind="adamw", params=params, lr=lr, betas=betas, eps=1e-10,
                                                weight_decay=0.0)
    groups = [
        adamw(list(model.lm_head.parameters()), hp.unembedding_lr * scale),
        adamw(list(model.transformer.wte.parameters()), hp.embedding_lr * scale),
        adamw(list(model.value_embeds.parameters()), hp.embedding_lr * scale),
        adamw([model.resid_lambdas], hp.scalar_lr * 0.01),
        adamw([model.x0_lambdas], hp.scalar_lr, betas=(0.96, 0.95)),
    ]
    for shape in sorted({p.shape for p in matrix_params}):
        groups.append(dict(kind="muon", params=[p for p in matrix_params if p.shape == shape], lr=hp.matrix_lr,
                           momentum=0.95, ns_steps=5, beta2=0.95, weight_decay=hp.weight_decay))
    groups = [g for g in groups if g["params"]]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters())), "a parameter has no group"
    optimizer = MuonAdamW(groups, compiled, ortho_dtype)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    return optimizer


# ---------------------------------------------------------------------------
# Schedules (progress = fraction of the budget used: time, or tokens in fixed-token mode)
# ---------------------------------------------------------------------------

def lr_multiplier(hp, progress):
    if progress < hp.warmup_ratio:
        return progress / hp.warmup_ratio
    if progress < 1.0 - hp.warmdown_ratio:
        return 1.0
    cooldown = (1.0 - progress) / hp.warmdown_ratio
    return cooldown + (1 - cooldown) * hp.final_lr_frac


def muon_momentum(hp, step):
    frac = min(step / max(hp.muon_momentum_warmup_steps, 1), 1)
    return (1 - frac) * 0.85 + frac * 0.95


def weight_decay(hp, progress):
    return hp.weight_decay * (1 - progress)


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

def train(ctx):
    hp = Hyper.from_cfg(ctx.cfg)
    settings = ctx.settings  # the harness's choices for this device: batch that fits, precision, attention
    # fewer rows per micro-batch on a smaller GPU, more accumulation below: same total batch
    hp.device_batch_size = settings.get("device_batch_size", hp.device_batch_size)
    device = torch.device(ctx.device)
    cuda = device.type == "cuda"
    # CPU runs eager (no compiler toolchain needed, no compile wait); a GPU without triton too
    compiled = cuda and hp.compile and settings["compile"]
    torch.manual_seed(ctx.seed)
    if cuda:
        torch.cuda.manual_seed(ctx.seed)
        torch.set_float32_matmul_precision("high")
    # bf16 where the GPU has it (capability >= 8.0); fp16 on older GPUs, whose narrow range needs
    # the loss scaled up so that small gradients do not underflow to zero (GradScaler)
    amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(settings["dtype"])
    autocast = torch.autocast("cuda", dtype=amp_dtype) if cuda and amp_dtype else nullcontext()
    scaler = torch.amp.GradScaler("cuda", enabled=settings["loss_scaling"])
    bf16 = amp_dtype == torch.bfloat16

    model = build_model(ctx.cfg).to(device)
    if bf16:  # embeddings in bf16 halve their memory traffic (as upstream); matrices stay fp32 masters.
        # Not in fp16: GradScaler refuses fp16 parameters, and fp16's range is too narrow for them.
        model.transformer.wte.to(dtype=torch.bfloat16)
        model.value_embeds.to(dtype=torch.bfloat16)
    # Muon orthogonalizes in bf16 on GPU as upstream; in fp32 where there is no bf16 (and on CPU)
    optimizer = setup_optimizer(model, hp, compiled, torch.bfloat16 if bf16 else torch.float32)
    flops_per_token = model.estimate_flops()

    tokens_per_micro = hp.device_batch_size * ctx.seq_len
    assert hp.total_batch_size % tokens_per_micro == 0, "total_batch_size must be a multiple of device_batch_size * seq_len"
    grad_accum = hp.total_batch_size // tokens_per_micro

    step_model = model
    if compiled:
        # Block masks are built before compiling, so the compiled graph sees them as constants.
        # FlexAttention only where the harness says it runs (triton, capability >= 8.0); without
        # block masks the model uses SDPA with the same sliding-window rule as a boolean mask.
        if settings["attention"] == "flex":
            model.block_masks = {w: sliding_window_block_mask(w, ctx.seq_len, device)
                                 for w in sorted(set(model.window_sizes)) if w < ctx.seq_len - 1}
        step_model = torch.compile(model, dynamic=False)
        # Warm up on random tokens before touching data: compilation is then off the budget clock
        # (ctx starts it at the first batch, or when the startup allowance is spent). The weights
        # are restored and the optimizer state dropped afterwards, so nothing is learned here.
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        # two distinct tensors: with the same one for inputs and targets dynamo would guard on
        # `idx is targets` and compile the whole model again at the first real step
        x, y = torch.randint(0, ctx.vocab_size, (2, hp.device_batch_size, ctx.seq_len), device=device)
        with autocast:
            step_model(x, y).backward()
        optimizer.step()
        model.zero_grad(set_to_none=True)
        model.load_state_dict(saved)
        optimizer.state.clear()
        del saved, x, y
        torch.cuda.synchronize()

    # On CUDA the loss of a step is copied into pinned host memory without a sync and read one step
    # later, after that step's event: the GPU queue never drains, and the CPU runs at most one step
    # ahead of the GPU, so ctx.done() stays accurate.
    host_loss = torch.zeros(2, pin_memory=True) if cuda else None
    inflight = deque()  # (step, loss tensor or host slot, event)
    batches = ctx.batches(hp.device_batch_size)
    step, t_last = 0, time.perf_counter()

    def report(s, loss_value, lr):
        nonlocal t_last
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss is NaN at step {s}; lower the learning rate")
        if loss_value > 100:
            raise FloatingPointError(f"loss is exploding ({loss_value:.1f}) at step {s}; lower the learning rate")
        now = time.perf_counter()
        dt, t_last = now - t_last, now
        tok_per_s = hp.total_batch_size / dt
        # MFU as upstream counts it (model FLOPs per token x tokens/s over the dense datasheet
        # peak), against this device's peak; not logged where the harness does not know the peak
        peak = settings["peak_flops"]
        extra = {"mfu": 100 * flops_per_token * tok_per_s / peak} if peak else {}
        ctx.log(step=s, loss=loss_value, lr=lr, tok_per_s=round(tok_per_s), **extra)

    while not ctx.done():
        loss_sum, out_of_data = 0.0, False
        for _ in range(grad_accum):
            batch = next(batches, None)
            if batch is None:  # fixed-token mode: the harness stops serving at max_tokens
                out_of_data = True
                break
            x, y = batch
            with autocast:
                loss = step_model(x, y)
            scaler.scale(loss / grad_accum).backward()  # scale() is the identity without loss scaling
            loss_sum = loss_sum + loss.detach()
        if out_of_data:
            break
        progress = ctx.progress()
        lrm = lr_multiplier(hp, progress)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * lrm
            if group["kind"] == "muon":
                group["momentum"] = muon_momentum(hp, step)
                group["weight_decay"] = weight_decay(hp, progress)
        scaler.step(optimizer)  # with loss scaling: unscales, and skips a step whose gradients overflowed
        scaler.update()
        model.zero_grad(set_to_none=True)
        step_loss = loss_sum / grad_accum
        lr = hp.matrix_lr * lrm
        if cuda:
            slot = host_loss[step % 2]
            slot.copy_(step_loss, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            inflight.append((step, slot, event, lr))
            if len(inflight) > 1:
                s, slot, event, lr_s = inflight.popleft()
                event.synchronize()
                report(s, slot.item(), lr_s)
        else:
            report(step, step_loss.item(), lr)
        step += 1
    for s, slot, event, lr_s in inflight:
        event.synchronize()
        report(s, slot.item(), lr_s)
    return model
