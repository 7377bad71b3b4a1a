"""Fast-WAM: a video DiT and an action DiT sharing attention in every layer (Mixture-of-Transformers).

Reads top-down: small helpers (timestep features, RoPE, the attention mask), the pieces of a block,
the two experts, then `FastWAM`, which owns both experts and the proprio encoder and offers three
entry points:

- `forward`: one joint pass over [video; action] tokens (training, the no-cache and Joint samplers).
- `prefill_video`: one video-expert pass over the clean current frame, filling a per-layer K/V cache.
- `action_velocity`: one action-expert pass that attends to that cache (the single-pass sampler).

Conventions (see FASTWAM.md):
- Timesteps t are in [0, 1000]; t = 1000 is pure noise. The video expert's timestep is per token:
  tokens of latent frame 0 (the current, clean frame) always get t = 0.
- Tokens are ordered (frame, height, width); the sequence of a layer's shared attention is
  [video; action]; the boolean mask says True = may attend.
- Parameter names follow the released checkpoint (`mot.mixtures.video.*`, `mot.mixtures.action.*`,
  `proprio_encoder.*`) so it loads key for key.

Shapes: B batch, S sequence, D an expert's hidden width, H heads, Dh head dim (H * Dh = "attn dim",
shared by both experts), F latent frames, L context tokens, A action dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from model.config import FastWAMConfig

# ------------------------------------------------------------------------------------------------
# Timestep features and rotary position embedding
# ------------------------------------------------------------------------------------------------


def sinusoidal_embedding(t: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """(N,) timesteps -> (N, dim) features [cos | sin], frequencies 10000^(-i/(dim/2)).

    Computed in float64 (as the reference) so large t keeps its precision, then cast to `dtype`.
    """
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device).div(half))
    args = torch.outer(t.to(torch.float64), freqs)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1).to(dtype)


def rope_angles_1d(dim: int, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """(P,) integer positions -> (P, dim // 2) float64 rotation angles for one RoPE part."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device)[: dim // 2] / dim))
    return torch.outer(positions.to(torch.float64), freqs)


def rope_angles_video(head_dim: int, grid: tuple[int, int, int], theta: float, device=None) -> torch.Tensor:
    """3-D RoPE angles (F*Hp*Wp, head_dim // 2): the head dim is split (d - 2(d//3), d//3, d//3)
    over (frame, height, width); tokens in (frame, height, width) order."""
    f, h, w = grid
    d_f, d_hw = head_dim - 2 * (head_dim // 3), head_dim // 3
    a_f = rope_angles_1d(d_f, torch.arange(f, device=device), theta)
    a_h = rope_angles_1d(d_hw, torch.arange(h, device=device), theta)
    a_w = rope_angles_1d(d_hw, torch.arange(w, device=device), theta)
    return torch.cat(
        [
            a_f[:, None, None, :].expand(f, h, w, -1),
            a_h[None, :, None, :].expand(f, h, w, -1),
            a_w[None, None, :, :].expand(f, h, w, -1),
        ],
        dim=-1,
    ).reshape(f * h * w, -1)


def rope_angles_action(head_dim: int, length: int, theta: float, device=None) -> torch.Tensor:
    """1-D RoPE angles (length, head_dim // 2) over the whole head dim, positions 0..length-1."""
    return rope_angles_1d(head_dim, torch.arange(length, device=device), theta)


@dataclass
class Rope:
    """cos/sin tables (S, 1, Dh/2) in the compute dtype; made once per shape, reused per layer."""

    cos: torch.Tensor
    sin: torch.Tensor

    @classmethod
    def from_angles(cls, angles: torch.Tensor, dtype: torch.dtype) -> "Rope":
        # cos/sin are taken in float64 and only then rounded: this is what keeps us within 1e-7 of
        # the reference's float64 complex multiply while the multiply itself runs in `dtype`.
        return cls(torch.cos(angles)[:, None, :].to(dtype), torch.sin(angles)[:, None, :].to(dtype))


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate adjacent pairs (2i, 2i+1) of each head's vector. x: (B, S, H, Dh) -> same."""
    x0, x1 = x.unflatten(-1, (-1, 2)).unbind(-1)  # (B, S, H, Dh/2) each
    cos, sin = rope.cos, rope.sin
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


# ------------------------------------------------------------------------------------------------
# The structured attention mask
# ------------------------------------------------------------------------------------------------


def build_attention_mask(
    video_frames: int, tokens_per_frame: int, action_len: int, joint: bool = False, device=None
) -> torch.Tensor:
    """(Sv + Sa, Sv + Sa) bool, True = may attend. Rows are queries, columns keys; order [video; action].

    video -> video: all, except that first-frame tokens see only the first frame;
    action -> action: all; action -> video: first frame only (Joint variant: all video);
    video -> action: none. Because the first frame sees only itself, its keys/values are the same
    with or without future frames - which is what makes single-pass inference exact.
    """
    sv = video_frames * tokens_per_frame
    s = sv + action_len
    mask = torch.zeros((s, s), dtype=torch.bool, device=device)
    mask[:sv, :sv] = True
    mask[:tokens_per_frame, tokens_per_frame:sv] = False
    mask[sv:, sv:] = True
    mask[sv:, : (sv if joint else tokens_per_frame)] = True
    return mask


# ------------------------------------------------------------------------------------------------
# Block pieces
# ------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """RMSNorm over the whole (H * Dh) vector, computed in float32 (as Wan), then scaled."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype) * self.weight


class SelfAttention(nn.Module):
    """Projections of the shared self-attention; the attention itself runs in the MoT layer.

    q/k/v map the expert's width to the shared attn dim (H * Dh) and o maps back, so experts of
    different widths can attend together.
    """

    def __init__(self, hidden_dim: int, attn_dim: int, eps: float):
        super().__init__()
        self.q = nn.Linear(hidden_dim, attn_dim)
        self.k = nn.Linear(hidden_dim, attn_dim)
        self.v = nn.Linear(hidden_dim, attn_dim)
        self.o = nn.Linear(attn_dim, hidden_dim)
        self.norm_q = RMSNorm(attn_dim, eps)
        self.norm_k = RMSNorm(attn_dim, eps)


class CrossAttention(nn.Module):
    """Attention from an expert's tokens to the context ([text; proprio]) after its text embedding."""

    def __init__(self, hidden_dim: int, attn_dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(hidden_dim, attn_dim)
        self.k = nn.Linear(hidden_dim, attn_dim)
        self.v = nn.Linear(hidden_dim, attn_dim)
        self.o = nn.Linear(attn_dim, hidden_dim)
        self.norm_q = RMSNorm(attn_dim, eps)
        self.norm_k = RMSNorm(attn_dim, eps)

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) embedded context -> k, v (B, H, L, Dh). Fixed for a whole chunk: cacheable."""
        k = self.norm_k(self.k(context)).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
        v = self.v(context).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
        return k, v

    def forward(self, x, k, v, mask):
        """x (B, S, D); k, v (B, H, L, Dh); mask (B, 1, 1, L) bool or None -> (B, S, D)."""
        q = self.norm_q(self.q(x)).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, S, Dh)
        return self.o(out.transpose(1, 2).flatten(2))


class Block(nn.Module):
    """One expert's half of a MoT layer (Wan DiT block with the self-attention split out).

    x = x + gate1 * o(attn(modulate(LN(x), shift1, scale1)))
    x = x + cross_attn(LN_affine(x), context)
    x = x + gate2 * ffn(modulate(LN(x), shift2, scale2))
    """

    def __init__(self, hidden_dim: int, attn_dim: int, num_heads: int, ffn_dim: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.eps = eps
        self.self_attn = SelfAttention(hidden_dim, attn_dim, eps)
        self.cross_attn = CrossAttention(hidden_dim, attn_dim, num_heads, eps)
        self.norm3 = nn.LayerNorm(hidden_dim, eps=eps)  # the only affine LN: before cross-attention
        self.ffn = nn.Sequential(nn.Linear(hidden_dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, hidden_dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, hidden_dim) / hidden_dim**0.5)

    def modulation_params(self, t_mod: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """t_mod (B, G, 6, D) -> 6 tensors (B, G, 1, D): shift1, scale1, gate1, shift2, scale2, gate2.

        G groups of tokens share a timestep: latent frames for video, the whole chunk for actions.
        """
        return (self.modulation.to(t_mod.dtype) + t_mod).unsqueeze(3).unbind(2)

    def attention_inputs(self, x: torch.Tensor, mod: tuple[torch.Tensor, ...], rope: Rope):
        """x (B, S, D) -> q, k, v (B, H, S, Dh); RMSNorm on q and k, then RoPE."""
        b, s, d = x.shape
        g = mod[0].shape[1]
        h = F.layer_norm(x.view(b, g, s // g, d), (d,), eps=self.eps) * (1 + mod[1]) + mod[0]
        h = h.view(b, s, d)
        attn = self.self_attn
        q = apply_rope(attn.norm_q(attn.q(h)).unflatten(-1, (self.num_heads, -1)), rope)
        k = apply_rope(attn.norm_k(attn.k(h)).unflatten(-1, (self.num_heads, -1)), rope)
        v = attn.v(h).unflatten(-1, (self.num_heads, -1))
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def post_attention(self, x, attn_out, mod, ctx_k, ctx_v, ctx_mask):
        """x (B, S, D), attn_out (B, H, S, Dh) -> x after o-proj residual, cross-attn and FFN."""
        b, s, d = x.shape
        g = mod[0].shape[1]
        y = self.self_attn.o(attn_out.transpose(1, 2).flatten(2))
        x = (x.view(b, g, s // g, d) + mod[2] * y.view(b, g, s // g, d)).view(b, s, d)
        x = x + self.cross_attn(self.norm3(x), ctx_k, ctx_v, ctx_mask)
        h = F.layer_norm(x.view(b, g, s // g, d), (d,), eps=self.eps) * (1 + mod[4]) + mod[3]
        y = self.ffn(h.view(b, s, d))
        return (x.view(b, g, s // g, d) + mod[5] * y.view(b, g, s // g, d)).view(b, s, d)


def _time_mlps(freq_dim: int, hidden_dim: int) -> tuple[nn.Sequential, nn.Sequential]:
    """The checkpoint's `time_embedding` (Linear, SiLU, Linear) and `time_projection` (SiLU,
    Linear to the 6-way block modulation)."""
    embedding = nn.Sequential(nn.Linear(freq_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim))
    projection = nn.Sequential(nn.SiLU(), nn.Linear(hidden_dim, 6 * hidden_dim))
    return embedding, projection


def _time_conditioning(expert, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """t (...,) -> t_emb (..., D), t_mod (..., 6, D) for an expert with time_embedding/projection."""
    dtype = expert.time_embedding[0].weight.dtype
    feats = sinusoidal_embedding(t.reshape(-1), expert.freq_dim, dtype)
    t_emb = expert.time_embedding(feats)
    t_mod = expert.time_projection(t_emb).unflatten(-1, (6, -1))
    return t_emb.reshape(*t.shape, -1), t_mod.reshape(*t.shape, 6, -1)


def _text_mlp(text_dim: int, hidden_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(text_dim, hidden_dim), nn.GELU(approximate="tanh"), nn.Linear(hidden_dim, hidden_dim))


# ------------------------------------------------------------------------------------------------
# The two experts
# ------------------------------------------------------------------------------------------------


class VideoHead(nn.Module):
    """LN -> (shift, scale) from the per-token time embedding -> Linear to out_dim * prod(patch)."""

    def __init__(self, hidden_dim: int, out_dim: int, patch_size: tuple[int, int, int], eps: float):
        super().__init__()
        self.eps = eps
        self.head = nn.Linear(hidden_dim, out_dim * math.prod(patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, hidden_dim) / hidden_dim**0.5)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """x (B, S, D), t_emb (B, F, D) per latent frame -> (B, S, out_dim * prod(patch))."""
        b, s, d = x.shape
        f = t_emb.shape[1]
        shift, scale = (self.modulation.to(t_emb.dtype)[:, None] + t_emb[:, :, None]).unsqueeze(3).unbind(2)
        h = F.layer_norm(x.view(b, f, s // f, d), (d,), eps=self.eps) * (1 + scale) + shift
        return self.head(h.view(b, s, d))


class VideoExpert(nn.Module):
    """Wan2.2-TI2V-style DiT over VAE latents (B, C, F, H, W)."""

    def __init__(self, config: FastWAMConfig):
        super().__init__()
        vc = config.video
        self.patch_size = tuple(vc.patch_size)
        self.hidden_dim = vc.hidden_dim
        self.freq_dim = vc.freq_dim
        self.patch_embedding = nn.Conv3d(vc.in_dim, vc.hidden_dim, kernel_size=vc.patch_size, stride=vc.patch_size)
        self.text_embedding = _text_mlp(config.text_dim, vc.hidden_dim)
        self.time_embedding, self.time_projection = _time_mlps(vc.freq_dim, vc.hidden_dim)
        self.blocks = nn.ModuleList(
            Block(vc.hidden_dim, config.attn_dim, config.num_heads, vc.ffn_dim, config.eps) for _ in range(config.num_layers)
        )
        self.head = VideoHead(vc.hidden_dim, vc.in_dim, vc.patch_size, config.eps)

    def patchify(self, latents: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """(B, C, F, H, W) -> tokens (B, F*Hp*Wp, D) in (frame, height, width) order, grid (F, Hp, Wp).

        The Conv3d with kernel = stride = patch is a Linear on flattened (C, pt, ph, pw) patches;
        writing it as one matmul is faster on CPU and gives tokens in order without a permute.
        """
        b, c, f, h, w = latents.shape
        pt, ph, pw = self.patch_size
        grid = (f // pt, h // ph, w // pw)
        x = latents.reshape(b, c, grid[0], pt, grid[1], ph, grid[2], pw)
        x = x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, math.prod(grid), c * pt * ph * pw)
        weight = self.patch_embedding.weight.flatten(1)
        return F.linear(x.to(weight.dtype), weight, self.patch_embedding.bias), grid

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(B, S, C * pt * ph * pw), per-token vector ordered (pt, ph, pw, C) -> (B, C, F, H, W)."""
        f, h, w = grid
        pt, ph, pw = self.patch_size
        b = x.shape[0]
        x = x.view(b, f, h, w, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, -1, f * pt, h * ph, w * pw)

    def time_conditioning(self, t_frames: torch.Tensor):
        """t_frames (B, F) per latent frame -> t_emb (B, F, D), t_mod (B, F, 6, D)."""
        return _time_conditioning(self, t_frames)


class ActionExpert(nn.Module):
    """The narrower DiT over the action chunk (B, Ha, A); plain linear encoder and head."""

    def __init__(self, config: FastWAMConfig):
        super().__init__()
        ac = config.action
        self.hidden_dim = ac.hidden_dim
        self.freq_dim = ac.freq_dim
        self.action_encoder = nn.Linear(config.action_dim, ac.hidden_dim)
        self.text_embedding = _text_mlp(config.text_dim, ac.hidden_dim)
        self.time_embedding, self.time_projection = _time_mlps(ac.freq_dim, ac.hidden_dim)
        self.blocks = nn.ModuleList(
            Block(ac.hidden_dim, config.attn_dim, config.num_heads, ac.ffn_dim, config.eps) for _ in range(config.num_layers)
        )
        self.head = nn.Linear(ac.hidden_dim, config.action_dim)

    def time_conditioning(self, t: torch.Tensor):
        """t (N,) per sample -> t_emb (N, D), t_mod (N, 1, 6, D): one token group per sample."""
        t_emb, t_mod = _time_conditioning(self, t)
        return t_emb, t_mod[:, None]


class MoT(nn.Module):
    """Holds the experts under the checkpoint's names: `mixtures.video`, `mixtures.action`."""

    def __init__(self, config: FastWAMConfig):
        super().__init__()
        self.mixtures = nn.ModuleDict({"video": VideoExpert(config), "action": ActionExpert(config)})


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------


@dataclass
class ActionStepCache:
    """What the action steps of one chunk reuse (inference only; built by `prefill_video`).

    k, v: per layer (B, H, Sv + Sa, Dh) buffers; [:, :, :Sv] holds the current frame's keys and
    values, each action step writes its own into [:, :, Sv:] and attends to the whole buffer.
    ctx_k, ctx_v: per layer, the action expert's cross-attention keys/values of the context.
    """

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    ctx_k: list[torch.Tensor]
    ctx_v: list[torch.Tensor]
    ctx_mask: torch.Tensor | None  # (B, 1, 1, L) or None when every context token is valid
    rope: Rope
    video_len: int


class FastWAM(nn.Module):
    """The Fast-WAM network: `mot` (video + action experts) and `proprio_encoder`.

    The VAE and the text encoder are not part of it (they are frozen and live in `model.encoders`);
    its `state_dict()` has exactly the names of the released checkpoint.
    """

    def __init__(self, config: FastWAMConfig):
        super().__init__()
        self.config = config
        self.mot = MoT(config)
        self.proprio_encoder = nn.Linear(config.proprio_dim, config.text_dim)
        self.gradient_checkpointing = False  # trainers switch it on for the large presets
        self._rope_cache: dict[tuple, Rope] = {}
        self.init_weights()

    @property
    def video(self) -> VideoExpert:
        return self.mot.mixtures["video"]

    @property
    def action(self) -> ActionExpert:
        return self.mot.mixtures["action"]

    @property
    def dtype(self) -> torch.dtype:
        return self.proprio_encoder.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.proprio_encoder.weight.device

    def init_weights(self) -> None:
        """Wan's init: xavier-uniform Linears with zero bias; N(0, 0.02) for the text/time MLPs;
        the video head starts at zero so a fresh model predicts zero velocity for video. The
        action head keeps PyTorch's default (the reference leaves it random). Modulation tables
        keep their N(0, 1/D) draw from construction. No-op on the meta device."""
        if self.proprio_encoder.weight.is_meta:
            return
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for expert in (self.video, self.action):
            for seq in (expert.text_embedding, expert.time_embedding):
                for layer in seq:
                    if isinstance(layer, nn.Linear):
                        nn.init.normal_(layer.weight, std=0.02)
        nn.init.xavier_uniform_(self.video.patch_embedding.weight.flatten(1))
        nn.init.zeros_(self.video.patch_embedding.bias)
        nn.init.zeros_(self.video.head.head.weight)
        self.action.head.reset_parameters()

    # -- small helpers -----------------------------------------------------------------------------
    def _rope(self, kind: str, shape: tuple, device, dtype) -> Rope:
        # Tables made under inference_mode cannot be saved for backward: keep them apart.
        key = (kind, shape, str(device), dtype, torch.is_inference_mode_enabled())
        rope = self._rope_cache.get(key)
        if rope is None:
            c = self.config
            if kind == "video":
                angles = rope_angles_video(c.attn_head_dim, shape, c.rope_theta, device)
            else:
                angles = rope_angles_action(c.attn_head_dim, shape[0], c.rope_theta, device)
            rope = Rope.from_angles(angles, dtype)
            self._rope_cache[key] = rope
        return rope

    def build_context(self, context, context_mask, proprio):
        """Append the proprio token: context (B, L, text_dim), mask (B, L) bool (False = padding),
        proprio (B, proprio_dim) -> context (B, L + 1, text_dim), mask (B, L + 1)."""
        token = self.proprio_encoder(proprio.to(self.dtype))[:, None]
        ctx = torch.cat([context.to(self.dtype), token], dim=1)
        mask = torch.cat([context_mask.bool(), torch.ones_like(context_mask[:, :1], dtype=torch.bool)], dim=1)
        return ctx, mask

    @staticmethod
    def _ctx_attn_mask(mask: torch.Tensor) -> torch.Tensor | None:
        # None when nothing is padded lets SDPA take its fastest (flash) kernel.
        return None if bool(mask.all()) else mask[:, None, None, :]

    # -- joint pass ----------------------------------------------------------------------------------
    def forward(
        self,
        latents: torch.Tensor,
        t_video: torch.Tensor,
        action: torch.Tensor,
        t_action: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        proprio: torch.Tensor,
        joint: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One MoT pass over [video; action] tokens.

        latents (B, C, F, H, W): noisy latents whose frame 0 is the clean current frame;
        t_video, t_action (B,) in [0, 1000]; action (B, Ha, A) noisy actions;
        context (B, L, text_dim), context_mask (B, L) bool; proprio (B, proprio_dim);
        joint: use the Joint-variant mask (default: `config.variant == "joint"`).
        Returns the velocity predictions (eps - x0): video (B, C, F, H, W), action (B, Ha, A).
        """
        if joint is None:
            joint = self.config.variant == "joint"
        video, act = self.video, self.action
        dtype = self.dtype
        b = latents.shape[0]

        x_v, grid = video.patchify(latents)
        f = grid[0]
        tpf = grid[1] * grid[2]
        t_frames = t_video.to(torch.float32)[:, None].expand(b, f).clone()
        t_frames[:, 0] = 0.0  # the current frame is clean
        t_emb_v, t_mod_v = video.time_conditioning(t_frames)
        x_a = act.action_encoder(action.to(dtype))
        _, t_mod_a = act.time_conditioning(t_action.to(torch.float32))

        ctx, ctx_mask = self.build_context(context, context_mask, proprio)
        ctx_v, ctx_a = video.text_embedding(ctx), act.text_embedding(ctx)
        attn_ctx_mask = self._ctx_attn_mask(ctx_mask)

        sv, sa = x_v.shape[1], x_a.shape[1]
        mask = build_attention_mask(f, tpf, sa, joint=joint, device=x_v.device)
        rope_v = self._rope("video", grid, x_v.device, dtype)
        rope_a = self._rope("action", (sa,), x_v.device, dtype)

        for bv, ba in zip(video.blocks, act.blocks):
            args = (bv, ba, x_v, x_a, t_mod_v, t_mod_a, ctx_v, ctx_a, attn_ctx_mask, mask, rope_v, rope_a)
            if self.gradient_checkpointing and self.training:
                x_v, x_a = checkpoint(self._joint_layer, *args, use_reentrant=False)
            else:
                x_v, x_a = self._joint_layer(*args)

        pred_video = video.unpatchify(video.head(x_v, t_emb_v), grid)
        pred_action = act.head(x_a)
        return pred_video, pred_action

    @staticmethod
    def _joint_layer(bv, ba, x_v, x_a, t_mod_v, t_mod_a, ctx_v, ctx_a, ctx_mask, mask, rope_v, rope_a):
        mod_v, mod_a = bv.modulation_params(t_mod_v), ba.modulation_params(t_mod_a)
        qv, kv, vv = bv.attention_inputs(x_v, mod_v, rope_v)
        qa, ka, va = ba.attention_inputs(x_a, mod_a, rope_a)
        out = F.scaled_dot_product_attention(
            torch.cat([qv, qa], 2), torch.cat([kv, ka], 2), torch.cat([vv, va], 2), attn_mask=mask
        )
        out_v, out_a = out.split([x_v.shape[1], x_a.shape[1]], dim=2)
        x_v = bv.post_attention(x_v, out_v, mod_v, *bv.cross_attn.context_kv(ctx_v), ctx_mask)
        x_a = ba.post_attention(x_a, out_a, mod_a, *ba.cross_attn.context_kv(ctx_a), ctx_mask)
        return x_v, x_a

    # -- single-pass inference ------------------------------------------------------------------------
    @torch.no_grad()
    def prefill_video(
        self,
        first_latent: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        proprio: torch.Tensor,
        action_len: int | None = None,
    ) -> ActionStepCache:
        """Run the video expert once over the clean current frame (t = 0) and cache what the
        action steps need: per-layer video K/V and the action expert's context K/V.

        first_latent (B, C, 1, H, W); context (B, L, text_dim); context_mask (B, L); proprio (B, P).
        """
        video, act = self.video, self.action
        dtype = self.dtype
        action_len = action_len or self.config.action_horizon
        b = first_latent.shape[0]
        x, grid = video.patchify(first_latent[:, :, :1])
        _, t_mod = video.time_conditioning(torch.zeros((b, 1), device=x.device))
        ctx, ctx_mask = self.build_context(context, context_mask, proprio)
        attn_ctx_mask = self._ctx_attn_mask(ctx_mask)
        ctx_v, ctx_a = video.text_embedding(ctx), act.text_embedding(ctx)
        rope = self._rope("video", grid, x.device, dtype)
        sv = x.shape[1]
        ks, vs, cks, cvs = [], [], [], []
        for bv, ba in zip(video.blocks, act.blocks):
            mod = bv.modulation_params(t_mod)
            q, k, v = bv.attention_inputs(x, mod, rope)
            out = F.scaled_dot_product_attention(q, k, v)  # the first frame sees only itself
            x = bv.post_attention(x, out, mod, *bv.cross_attn.context_kv(ctx_v), attn_ctx_mask)
            k_buf = k.new_empty((b, k.shape[1], sv + action_len, k.shape[3]))
            v_buf = torch.empty_like(k_buf)
            k_buf[:, :, :sv] = k
            v_buf[:, :, :sv] = v
            ks.append(k_buf)
            vs.append(v_buf)
            ck, cv = ba.cross_attn.context_kv(ctx_a)
            cks.append(ck)
            cvs.append(cv)
        rope_a = self._rope("action", (action_len,), x.device, dtype)
        return ActionStepCache(ks, vs, cks, cvs, attn_ctx_mask, rope_a, sv)

    def action_velocity(
        self, x_action: torch.Tensor, t_mod: torch.Tensor, cache: ActionStepCache, write_cache: bool = True
    ) -> torch.Tensor:
        """One action-expert pass against the cached video: x_action (B, Ha, A) noisy actions,
        t_mod (B, 1, 6, D) from `action.time_conditioning` -> velocity (B, Ha, A).

        Action queries may see every cached key (first-frame video and all actions), so no mask
        is needed. Writes this step's action K/V into the cache buffers (inference only);
        `write_cache=False` joins them to the cached video K/V instead, which autograd can
        differentiate (real-time chunking's guidance, `model.rtc`).
        """
        act = self.action
        sv = cache.video_len
        x = act.action_encoder(x_action.to(self.dtype))
        for i, block in enumerate(act.blocks):
            mod = block.modulation_params(t_mod)
            q, k, v = block.attention_inputs(x, mod, cache.rope)
            if write_cache:
                cache.k[i][:, :, sv:] = k
                cache.v[i][:, :, sv:] = v
                keys, values = cache.k[i], cache.v[i]
            else:
                keys = torch.cat([cache.k[i][:, :, :sv], k], dim=2)
                values = torch.cat([cache.v[i][:, :, :sv], v], dim=2)
            out = F.scaled_dot_product_attention(q, keys, values)
            x = block.post_attention(x, out, mod, cache.ctx_k[i], cache.ctx_v[i], cache.ctx_mask)
        return act.head(x)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
