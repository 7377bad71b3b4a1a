"""Samplers: 10 Euler steps of the rectified flow from pure noise (t = 1000) to data (t = 0).

- `sample_actions`: Fast-WAM single-pass inference. One video-expert pass over the clean current
  frame fills a per-layer K/V cache; then only the action expert runs, once per step.
- `sample_actions_nocache`: the same maths re-running the video expert every step (a check).
- `sample_joint`: test-time imagination (the Joint variant): future video latents are denoised
  together with the actions, every step a full pass of both experts.

Inputs everywhere: first_latent (B, C, 1, H, W) normalised latent of the current canvas;
context (B, L, text_dim), context_mask (B, L) bool; proprio (B, P) normalised state.
Noise is injectable (`noise=`) or drawn from `generator`.
"""

from __future__ import annotations

import torch

from model.fastwam import FastWAM
from model.flow import inference_schedule


def _initial_noise(shape, model: FastWAM, noise, generator, device):
    if noise is not None:
        return noise.to(device=device, dtype=model.dtype)
    # Drawn in float32 on the generator's device so a seed gives the same noise on CPU and GPU.
    gen_device = generator.device if generator is not None else "cpu"
    return torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32).to(device, model.dtype)


@torch.no_grad()
def sample_actions(
    model: FastWAM,
    first_latent: torch.Tensor,
    context: torch.Tensor,
    context_mask: torch.Tensor,
    proprio: torch.Tensor,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    num_steps: int | None = None,
) -> torch.Tensor:
    """Single-pass inference -> actions (B, Ha, A) in the model's (normalised) action space."""
    cfg = model.config
    b, device = first_latent.shape[0], first_latent.device
    x = _initial_noise((b, cfg.action_horizon, cfg.action_dim), model, noise, generator, device)
    timesteps, deltas = inference_schedule(cfg, num_steps, device=device)
    cache = model.prefill_video(first_latent.to(model.dtype), context, context_mask, proprio, action_len=x.shape[1])
    # All steps' time modulations in one batch: the schedule is known up front.
    _, t_mods = model.action.time_conditioning(timesteps.repeat_interleave(b))
    for i in range(len(timesteps)):
        v = model.action_velocity(x, t_mods[i * b : (i + 1) * b], cache)
        x = x + v * deltas[i].to(x.dtype)
    return x


@torch.no_grad()
def sample_actions_nocache(
    model: FastWAM,
    first_latent: torch.Tensor,
    context: torch.Tensor,
    context_mask: torch.Tensor,
    proprio: torch.Tensor,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    num_steps: int | None = None,
) -> torch.Tensor:
    """Like `sample_actions` but with a full MoT pass (video expert on the current frame) per step."""
    cfg = model.config
    b, device = first_latent.shape[0], first_latent.device
    x = _initial_noise((b, cfg.action_horizon, cfg.action_dim), model, noise, generator, device)
    timesteps, deltas = inference_schedule(cfg, num_steps, device=device)
    latent = first_latent[:, :, :1].to(model.dtype)
    t_zero = torch.zeros((b,), device=device)
    for t, delta in zip(timesteps, deltas):
        _, v = model(latent, t_zero, x, t.expand(b), context, context_mask, proprio, joint=False)
        x = x + v * delta.to(x.dtype)
    return x


@torch.no_grad()
def sample_joint(
    model: FastWAM,
    first_latent: torch.Tensor,
    context: torch.Tensor,
    context_mask: torch.Tensor,
    proprio: torch.Tensor,
    noise: torch.Tensor | None = None,
    video_noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    num_steps: int | None = None,
    joint: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Test-time imagination: denoise future video and actions together.

    Returns actions (B, Ha, A) and the imagined latents (B, C, F, H, W) whose frame 0 is the
    given current frame. joint: the attention mask (default: the Joint mask if the model is the
    Joint variant; with the Fast-WAM mask the actions equal `sample_actions`).
    """
    cfg = model.config
    b, device = first_latent.shape[0], first_latent.device
    x = _initial_noise((b, cfg.action_horizon, cfg.action_dim), model, noise, generator, device)
    c, _, h, w = first_latent.shape[1:]
    clean = first_latent[:, :, :1].to(model.dtype)
    video = _initial_noise((b, c, cfg.latent_frames, h, w), model, video_noise, generator, device)
    video[:, :, :1] = clean
    timesteps, deltas = inference_schedule(cfg, num_steps, device=device)
    for t, delta in zip(timesteps, deltas):
        tb = t.expand(b)
        v_video, v_action = model(video, tb, x, tb, context, context_mask, proprio, joint=joint)
        x = x + v_action * delta.to(x.dtype)
        video = video + v_video * delta.to(video.dtype)
        video[:, :, :1] = clean
    return x, video
