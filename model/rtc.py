"""Real-time chunking's guided sampling (Black, Galliker, Levine 2025, "Real-Time Execution of
Action Chunking Flow Policies"): a new chunk is in-painted so that it continues the plan being
executed, with no retraining.

Our flow convention (`model.flow`): s = 1 is noise, s = 0 data, x_s = (1 - s) x0 + s eps, the
network predicts v = eps - x0, so the running estimate of the clean chunk is x0_hat = x_s - s v.
Each of the Euler steps of the single-pass sampler becomes

    e      = W * (Y - x0_hat(x_s))              Y: the previous plan (normalised), W: the soft mask
    g      = e^T d x0_hat / d x_s               one vector-Jacobian product through the action expert
    v'     = v - min(beta, (s^2 + (1 - s)^2) / (s (1 - s))) * g
    x_s'   = x_s + v' (s' - s)

(the weight is the paper's (1 - tau) / (tau r^2) with tau = 1 - s, clipped at beta; it is beta at
both ends of the schedule). Only the action expert is iterated: the video expert runs once and
its keys and values are constants here, so the gradient is taken w.r.t. the noisy actions alone.
The mask and the prefix come from `model.execution.RealTimeChunking.guide`.

The readable action step (`FastWAM.action_velocity` without writing the cache) is used, because
the fused sampler is inference-only; a guided step costs about three plain ones.
"""

from __future__ import annotations

import time

import torch

from model.fastwam import FastWAM
from model.flow import inference_schedule


def guidance_weight(s: float, max_guidance: float) -> float:
    """The paper's guidance weight at noise level s (our convention), clipped at `max_guidance`."""
    if s <= 0.0 or s >= 1.0:
        return float(max_guidance)
    return float(min(max_guidance, (s * s + (1.0 - s) ** 2) / (s * (1.0 - s))))


def sample_actions_guided(
    model: FastWAM,
    first_latent: torch.Tensor,
    context: torch.Tensor,
    context_mask: torch.Tensor,
    proprio: torch.Tensor,
    prefix: torch.Tensor,
    weights: torch.Tensor,
    max_guidance: float,
    noise: torch.Tensor,
    num_steps: int | None = None,
) -> tuple[torch.Tensor, float]:
    """Single-pass sampling guided towards `prefix` -> (actions (B, Ha, A) normalised, seconds the
    video expert's pass took). prefix: (B, Ha, A) normalised previous plan; weights: (Ha,) soft
    mask; noise: (B, Ha, A) initial noise. Not under `torch.inference_mode` (autograd needs
    ordinary tensors)."""
    cfg = model.config
    device, dtype = first_latent.device, model.dtype
    b = first_latent.shape[0]
    timesteps, deltas = inference_schedule(cfg, num_steps, device=device)
    started = time.perf_counter()
    with torch.no_grad():
        cache = model.prefill_video(first_latent.to(dtype), context, context_mask, proprio, action_len=cfg.action_horizon)
        _, t_mods = model.action.time_conditioning(timesteps.repeat_interleave(b))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    encode_s = time.perf_counter() - started
    x = noise.to(device=device, dtype=dtype)
    target = prefix.to(device=device, dtype=torch.float32)
    mask = weights.to(device=device, dtype=torch.float32).view(1, -1, 1)
    levels = (timesteps / float(cfg.num_train_timesteps)).tolist()
    for i, s in enumerate(levels):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            v = model.action_velocity(xg, t_mods[i * b : (i + 1) * b], cache, write_cache=False)
            clean = xg - s * v
            error = (target - clean.float()) * mask
            (correction,) = torch.autograd.grad(clean, xg, error.to(clean.dtype))
        with torch.no_grad():
            guided = v.detach() - guidance_weight(s, max_guidance) * correction
            x = x + guided * deltas[i].to(x.dtype)
    return x.detach(), encode_s
