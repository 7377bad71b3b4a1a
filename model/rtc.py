"""Real-time chunking's guided sampling (Black, Galliker, Levine 2025, "Real-Time Execution of
Action Chunking Flow Policies"): a new chunk is in-painted so that it continues the plan being
executed, with no retraining.

Our flow convention (`model.flow`): s = 1 is noise, s = 0 data, x_s = (1 - s) x0 + s eps, the
network predicts v = eps - x0, so the running estimate of the clean chunk is x0_hat = x_s - s v.
Each of the Euler steps of the single-pass sampler becomes

    e      = W * (Y - x0_hat(x_s))              Y: the previous plan (normalised), W: the soft mask
    v'     = v - min(beta, (s^2 + (1 - s)^2) / (s (1 - s))) * e
    x_s'   = x_s + v' (s' - s)

(the weight is the paper's (1 - tau) / (tau r^2) with tau = 1 - s, clipped at beta; it is beta at
both ends of the schedule). The mask and the prefix come from
`model.execution.RealTimeChunking.guide`.

One departure from the paper, measured: the paper moves x_s along g = e^T d x0_hat / d x_s (a
vector-Jacobian product through the denoiser, pseudoinverse guidance). That presumes x0_hat
follows x_s; a trained policy that gives nearly the same chunk whatever the noise has
d x0_hat / d x_s ~ 0 (our tiny towel checkpoint: ~0.07 where Gaussian data would give ~1), so g
vanishes and nothing is in-painted: a far prefix moved the frozen actions by 10% at beta 5, and RTC
then re-planned almost like plain chunks (4/10 folds at zero delay on seeds 1000-1009; plain chunks
of 8: 1/10; ensembling: 10/10). Here the Jacobian is taken as the identity: the correction e
itself, which pulls the frozen actions to within 10% of the prefix on the same checkpoint (10/10
folds at zero delay on the same seeds), needs no backward pass (a guided step costs one readable
action step, not three), and for a denoiser whose x0_hat does follow x_s points the same way as g. tests/model/test_rtc.py holds both facts.

The readable action step (`FastWAM.action_velocity`) is used; the fused sampler has no hook for
the correction yet.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from model.fastwam import FastWAM
from model.flow import inference_schedule


def guidance_weight(s: float, max_guidance: float) -> float:
    """The paper's guidance weight at noise level s (our convention), clipped at `max_guidance`."""
    if s <= 0.0 or s >= 1.0:
        return float(max_guidance)
    return float(min(max_guidance, (s * s + (1.0 - s) ** 2) / (s * (1.0 - s))))


def guided_denoise(
    velocity: Callable[[torch.Tensor, int], torch.Tensor],
    noise: torch.Tensor,
    levels: Sequence[float],
    deltas: torch.Tensor,
    prefix: torch.Tensor,
    weights: torch.Tensor,
    max_guidance: float,
) -> torch.Tensor:
    """The guided Euler walk from noise to data -> x at s = 0, same shape and dtype as `noise`.

    velocity(x, i): the flow's velocity (eps - x0 convention) at step i;
    noise (B, Ha, A); levels: the n noise levels s_i (floats, 1 first); deltas (n,) s_{i+1} - s_i
    (negative); prefix (B, Ha, A) the plan to continue, in the same (normalised) units as x;
    weights (Ha,) the soft mask. With all weights 0 this is the plain Euler sampler, op for op.
    """
    x = noise
    target = prefix.to(device=noise.device, dtype=torch.float32)
    mask = weights.to(device=noise.device, dtype=torch.float32).view(1, -1, 1)
    with torch.no_grad():
        for i, s in enumerate(levels):
            v = velocity(x, i)
            correction = ((target - (x - s * v).float()) * mask).to(v.dtype)
            x = x + (v - guidance_weight(s, max_guidance) * correction) * deltas[i].to(x.dtype)
    return x


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
    mask; noise: (B, Ha, A) initial noise."""
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

    def velocity(x: torch.Tensor, i: int) -> torch.Tensor:
        return model.action_velocity(x, t_mods[i * b : (i + 1) * b], cache)

    levels = (timesteps / float(cfg.num_train_timesteps)).tolist()
    x = guided_denoise(velocity, noise.to(device=device, dtype=dtype), levels, deltas, prefix, weights, max_guidance)
    return x, encode_s
