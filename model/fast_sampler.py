"""Fast single-pass sampling: the action steps with fused weights (CPU), compiled and
CUDA-graphed (GPU).

`model.sampling.sample_actions` is the readable version; this file computes the same numbers
(tests hold them to 1e-5) with fewer, larger kernels, because at robot-control sizes an action
step is dominated by per-op overhead, not arithmetic:

- q/k/v of each action block are one matmul; the q and k RMSNorms and RoPEs run as one op each;
- the six modulation vectors of every (step, layer) are computed once per chunk, since the
  10-step schedule is known before the first step;
- RoPE is `x * cos + swap_pairs(x) * (+-sin)` with tables built once in float64.

A `SinglePassSampler` snapshots the weights when built: call `refresh()` after the weights change
(e.g. after a training step). Inference only (no autograd).

On CUDA, `SinglePassSampler(model, compile=True, cuda_graphs=True)` additionally compiles the
step with `torch.compile` and replays all action steps of a chunk from one captured CUDA graph,
with attention restricted to the flash / memory-efficient SDPA kernels.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.fastwam import ActionStepCache, FastWAM
from model.flow import inference_schedule


@dataclass
class _FusedBlock:
    """One action block's weights, gathered for the fused step (q scaled by Dh^-0.5 in advance)."""

    w_qkv: torch.Tensor  # (3 * attn_dim, D): q, k, v stacked
    b_qkv: torch.Tensor
    qk_norm: torch.Tensor  # (2, attn_dim): norm_q.weight * Dh^-0.5, norm_k.weight (both * sqrt(attn_dim))
    w_o: torch.Tensor
    b_o: torch.Tensor
    norm3_w: torch.Tensor
    norm3_b: torch.Tensor
    w_cq: torch.Tensor
    b_cq: torch.Tensor
    cq_norm: torch.Tensor  # cross_attn.norm_q.weight * Dh^-0.5 * sqrt(attn_dim)
    w_co: torch.Tensor
    b_co: torch.Tensor
    w_f1: torch.Tensor
    b_f1: torch.Tensor
    w_f2: torch.Tensor
    b_f2: torch.Tensor
    modulation: torch.Tensor  # (1, 6, D)

    @classmethod
    def from_block(cls, block, head_dim: int) -> "_FusedBlock":
        a, c = block.self_attn, block.cross_attn
        scale = head_dim**-0.5
        root_d = a.norm_q.weight.shape[0] ** 0.5  # see SinglePassSampler._rms
        return cls(
            w_qkv=torch.cat([a.q.weight, a.k.weight, a.v.weight]).contiguous(),
            b_qkv=torch.cat([a.q.bias, a.k.bias, a.v.bias]).contiguous(),
            qk_norm=torch.stack([a.norm_q.weight * scale, a.norm_k.weight]) * root_d,
            w_o=a.o.weight, b_o=a.o.bias,
            norm3_w=block.norm3.weight, norm3_b=block.norm3.bias,
            w_cq=c.q.weight, b_cq=c.q.bias, cq_norm=c.norm_q.weight * (scale * root_d),
            w_co=c.o.weight, b_co=c.o.bias,
            w_f1=block.ffn[0].weight, b_f1=block.ffn[0].bias,
            w_f2=block.ffn[2].weight, b_f2=block.ffn[2].bias,
            modulation=block.modulation,
        )


def _sdpa_context(device: torch.device):
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION])


@dataclass
class Prefilled:
    """What `SinglePassSampler.prefill` leaves for the action steps of one chunk."""

    cache: ActionStepCache
    mods: list
    deltas: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor | None
    batch: int


class SinglePassSampler:
    """Single-pass Fast-WAM sampler: one video prefill, then `num_steps` fused action steps.

    Call: `sampler(first_latent, context, context_mask, proprio, noise=None, generator=None)`
    -> actions (B, Ha, A), exactly like `sample_actions`.
    """

    def __init__(
        self,
        model: FastWAM,
        num_steps: int | None = None,
        kernels: str = "auto",
        compile: bool = False,
        cuda_graphs: bool = False,
    ):
        """kernels: "cpu" (complex-multiply RoPE, explicit softmax attention), "gpu" (real RoPE
        that torch.compile fuses, SDPA flash/efficient kernels) or "auto" (by the model's device).
        compile: torch.compile the action steps. cuda_graphs: replay them from a CUDA graph."""
        if cuda_graphs and model.device.type != "cuda":
            raise ValueError("cuda_graphs=True needs the model on a CUDA device; use cuda_graphs=False on CPU")
        if kernels not in ("auto", "cpu", "gpu"):
            raise ValueError(f"kernels must be 'auto', 'cpu' or 'gpu', got {kernels!r}")
        self.gpu_kernels = model.device.type == "cuda" if kernels == "auto" else kernels == "gpu"
        self.model = model
        self.num_steps = num_steps or model.config.num_inference_steps
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_key: tuple | None = None
        self.refresh()

    # -- weights --------------------------------------------------------------------------------
    @torch.no_grad()
    def refresh(self) -> None:
        """Re-read the model's weights (the fused copies do not follow later training steps)."""
        act = self.model.action
        head_dim = self.model.config.attn_head_dim
        self.blocks = [_FusedBlock.from_block(block, head_dim) for block in act.blocks]
        self.num_heads = self.model.config.num_heads
        self.eps = self.model.config.eps
        self.encoder = (act.action_encoder.weight, act.action_encoder.bias)
        self.head = (act.head.weight, act.head.bias)
        self._step_fn = self._steps
        if self.compile:
            self._step_fn = torch.compile(self._steps, dynamic=False, fullgraph=False)
        self._graph = None

    # -- per chunk ------------------------------------------------------------------------------
    @torch.no_grad()
    def _modulations(self, timesteps: torch.Tensor, batch: int) -> list[tuple[torch.Tensor, ...]]:
        """Per layer: (shift1, 1+scale1, gate1, shift2, 1+scale2, gate2), each (steps, B, 1, D)."""
        _, t_mod = self.model.action.time_conditioning(timesteps.repeat_interleave(batch))  # (n*B, 1, 6, D)
        t_mod = t_mod.view(len(timesteps), batch, 6, -1)
        mods = []
        for fb in self.blocks:
            m = (fb.modulation.to(t_mod.dtype) + t_mod).unsqueeze(3)  # (n, B, 6, 1, D)
            shift1, scale1, gate1, shift2, scale2, gate2 = m.unbind(2)
            mods.append((shift1, 1 + scale1, gate1, shift2, 1 + scale2, gate2))
        return mods

    def _rope_tables(self, cache: ActionStepCache):
        """CPU: one complex64 table (Sa, 1, Dh/2), so RoPE is a single complex multiply.
        CUDA: cos repeated per pair and sin with the sign pattern (-s, +s), both (Sa, 1, Dh),
        because torch.compile does not fuse complex arithmetic."""
        cos, sin = cache.rope.cos, cache.rope.sin
        if not self.gpu_kernels:
            return torch.complex(cos.float(), sin.float()), None
        return cos.repeat_interleave(2, dim=-1), torch.stack([-sin, sin], dim=-1).flatten(-2)

    @staticmethod
    def _apply_rope(x, cos, sin):
        """Rotate adjacent pairs of x (B, S, heads, Dh) by the tables of `_rope_tables`."""
        if sin is None:
            return torch.view_as_real(torch.view_as_complex(x.float().unflatten(-1, (-1, 2))) * cos).flatten(-2).to(x.dtype)
        swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (x1, x0) per pair
        return torch.addcmul(x * cos, swapped, sin)  # (x0 c - x1 s, x1 c + x0 s)

    # -- the steps ------------------------------------------------------------------------------
    def _attend(self, q, k, v, mask=None):
        """q is pre-scaled by Dh^-0.5. CPU: explicit softmax(q k^T) v is cheaper than SDPA's
        dispatch at these sizes; CUDA: SDPA (flash / memory-efficient kernels)."""
        if self.gpu_kernels:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
        scores = q @ k.transpose(-1, -2)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=-1) @ v

    def _rms(self, x, weight):
        """RMSNorm in float32 (as the reference). x * rsqrt(mean(x^2) + eps) * w is computed as
        x * rsqrt(sum(x^2) + d eps) * (w sqrt(d)), the sqrt(d) folded into the weight at refresh:
        a sum is cheaper than a mean on CPU, and it is the same number."""
        xf = x.float()
        return (xf * torch.rsqrt((xf * xf).sum(-1, keepdim=True).add_(x.shape[-1] * self.eps))).to(x.dtype).mul_(weight)

    def _modulated_norm(self, x, shift, scale_plus_1):
        """LN(x) * (1 + scale) + shift. With one sample the modulation is a plain (D,) vector,
        so LayerNorm's own affine does it in one kernel instead of two."""
        d = x.shape[-1]
        if x.shape[0] == 1:
            return F.layer_norm(x, (d,), scale_plus_1.reshape(d), shift.reshape(d), self.eps)
        return torch.addcmul(shift, F.layer_norm(x, (d,), eps=self.eps), scale_plus_1)

    def _layer(self, i, fb: _FusedBlock, x, mod, cache: ActionStepCache, cos, sin):
        """x (B, Sa, D) -> x after one action block, attending to the cached video K/V."""
        shift1, scale1p, gate1, shift2, scale2p, gate2 = mod
        b, s, d = x.shape
        heads, eps = self.num_heads, self.eps
        h = self._modulated_norm(x, shift1, scale1p)
        qkv = F.linear(h, fb.w_qkv, fb.b_qkv).view(b, s, 3, -1)
        qk = self._rms(qkv[:, :, :2], fb.qk_norm).view(b, s, 2 * heads, -1)  # q and k together
        qk = self._apply_rope(qk, cos, sin)
        sv = cache.video_len
        cache.k[i][:, :, sv:] = qk[:, :, heads:].transpose(1, 2)
        cache.v[i][:, :, sv:] = qkv[:, :, 2].view(b, s, heads, -1).transpose(1, 2)
        out = self._attend(qk[:, :, :heads].transpose(1, 2), cache.k[i], cache.v[i])
        x = torch.addcmul(x, gate1, F.linear(out.transpose(1, 2).reshape(b, s, -1), fb.w_o, fb.b_o))
        c = F.linear(F.layer_norm(x, (d,), fb.norm3_w, fb.norm3_b, eps), fb.w_cq, fb.b_cq)
        c = self._rms(c, fb.cq_norm).view(b, s, heads, -1).transpose(1, 2)
        out = self._attend(c, cache.ctx_k[i], cache.ctx_v[i], cache.ctx_mask)
        x = x + F.linear(out.transpose(1, 2).reshape(b, s, -1), fb.w_co, fb.b_co)
        h = self._modulated_norm(x, shift2, scale2p)
        h = F.linear(F.gelu(F.linear(h, fb.w_f1, fb.b_f1), approximate="tanh"), fb.w_f2, fb.b_f2)
        return torch.addcmul(x, gate2, h)

    def _steps(self, x, mods, deltas, cache: ActionStepCache, cos, sin):
        # Split the per-step tables once per chunk (one unbind per tensor, not one index per step).
        per_step = [list(zip(*(m.unbind(0) for m in layer))) for layer in mods]  # [layer][step]
        for n, delta in enumerate(deltas.unbind(0)):
            h = F.linear(x, *self.encoder)
            for i, fb in enumerate(self.blocks):
                h = self._layer(i, fb, h, per_step[i][n], cache, cos, sin)
            x = torch.addcmul(x, F.linear(h, *self.head), delta)
        return x

    # -- public ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, first_latent, context, context_mask, proprio) -> "Prefilled":
        """The video expert's one pass over the current frame and every per-chunk table the
        action steps reuse (the first half of `__call__`, timed apart by the policy runner)."""
        model, cfg = self.model, self.model.config
        b, device, dtype = first_latent.shape[0], first_latent.device, model.dtype
        timesteps, deltas = inference_schedule(cfg, self.num_steps, device=device)
        with _sdpa_context(device):
            cache = model.prefill_video(first_latent.to(dtype), context, context_mask, proprio,
                                        action_len=cfg.action_horizon)
            mods = self._modulations(timesteps, b)
        cos, sin = self._rope_tables(cache)
        return Prefilled(cache, mods, deltas.to(dtype), cos, sin, b)

    @torch.inference_mode()
    def denoise(self, prefilled: "Prefilled", noise=None, generator=None) -> torch.Tensor:
        """The action steps from `noise` (B, Ha, A) (drawn from `generator` when None) against a
        `prefill` -> actions (B, Ha, A) in the model's normalised action space."""
        model, cfg = self.model, self.model.config
        cache = prefilled.cache
        device = cache.k[0].device
        if noise is None:
            gen_device = generator.device if generator is not None else "cpu"
            noise = torch.randn((prefilled.batch, cfg.action_horizon, cfg.action_dim), generator=generator,
                                device=gen_device)
        x = noise.to(device=device, dtype=model.dtype)
        with _sdpa_context(device):
            if self.cuda_graphs:
                return self._replay_graph(x, prefilled.mods, prefilled.deltas, cache, prefilled.cos, prefilled.sin)
            return self._step_fn(x, prefilled.mods, prefilled.deltas, cache, prefilled.cos, prefilled.sin)

    def __call__(self, first_latent, context, context_mask, proprio, noise=None, generator=None) -> torch.Tensor:
        return self.denoise(self.prefill(first_latent, context, context_mask, proprio), noise, generator)

    # -- CUDA graphs ----------------------------------------------------------------------------
    def _replay_graph(self, x, mods, deltas, cache, cos, sin):
        """Capture all action steps once per input shape; later chunks copy their inputs into
        the captured buffers and replay: one launch instead of thousands of small kernels."""
        key = (tuple(x.shape), cache.video_len, tuple(cache.ctx_k[0].shape), cache.ctx_mask is None)
        if self._graph is None or self._graph_key != key:
            self._static = {
                "x": x.clone(),
                "mods": [tuple(m.clone() for m in layer) for layer in mods],
                "deltas": deltas.clone(),
                "cache": ActionStepCache(
                    [k.clone() for k in cache.k],
                    [v.clone() for v in cache.v],
                    [k.clone() for k in cache.ctx_k],
                    [v.clone() for v in cache.ctx_v],
                    None if cache.ctx_mask is None else cache.ctx_mask.clone(),
                    cache.rope,
                    cache.video_len,
                ),
                "cos": cos.clone(),
                "sin": sin.clone(),
            }
            st = self._static
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up (compilation, autotuning) off the graph
                for _ in range(2):
                    self._step_fn(st["x"], st["mods"], st["deltas"], st["cache"], st["cos"], st["sin"])
            torch.cuda.current_stream().wait_stream(stream)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                st["out"] = self._step_fn(st["x"], st["mods"], st["deltas"], st["cache"], st["cos"], st["sin"])
            self._graph_key = key
        st = self._static
        st["x"].copy_(x)
        for dst_layer, src_layer in zip(st["mods"], mods):
            for dst, src in zip(dst_layer, src_layer):
                dst.copy_(src)
        st["deltas"].copy_(deltas)
        sc = st["cache"]
        for dst, src in zip(sc.k + sc.v + sc.ctx_k + sc.ctx_v, cache.k + cache.v + cache.ctx_k + cache.ctx_v):
            dst.copy_(src)
        if sc.ctx_mask is not None:
            sc.ctx_mask.copy_(cache.ctx_mask)
        st["cos"].copy_(cos)
        st["sin"].copy_(sin)
        self._graph.replay()
        return st["out"].clone()
