"""Rectified flow for Fast-WAM: timestep sampling, loss weighting, the training loss.

Convention: t in [0, 1000], s = t / 1000, x_t = (1 - s) x0 + s eps; t = 1000 is pure noise.
The network predicts the velocity eps - x0. Shift-5 sampling: s = phi(u) = 5u / (1 + 4u), u ~ U(0, 1).
Noise and timesteps are injectable so tests are deterministic.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.config import FastWAMConfig


def shifted_sigma(u: torch.Tensor, shift: float) -> torch.Tensor:
    """phi(u) = shift * u / (1 + (shift - 1) u): maps uniform u to the noise level s."""
    return shift * u / (1.0 + (shift - 1.0) * u)


def sample_timesteps(batch: int, config: FastWAMConfig, generator=None, device=None) -> torch.Tensor:
    """(batch,) training timesteps 1000 * phi(u), u ~ U(0, 1), one per sample."""
    u = torch.rand((batch,), generator=generator, device=device, dtype=torch.float32)
    return shifted_sigma(u, config.shift) * float(config.num_train_timesteps)


@functools.lru_cache(maxsize=8)
def _weight_stats(shift: float, steps: int) -> tuple[float, float]:
    # y_min and mean of the Gaussian bump over the 1000-point grid the sampler could visit.
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)[:-1]
    t = shifted_sigma(u, shift) * steps
    y = torch.exp(-2.0 * ((t - steps / 2.0) / steps) ** 2)
    y_min = float(y.min())
    return y_min, float((y - y_min).mean())


def loss_weight(t: torch.Tensor, config: FastWAMConfig) -> torch.Tensor:
    """w(t) = (exp(-2((t - 500)/1000)^2) - y_min) / mean: favours mid-noise timesteps, mean 1."""
    steps = float(config.num_train_timesteps)
    y_min, mean = _weight_stats(float(config.shift), config.num_train_timesteps)
    y = torch.exp(-2.0 * ((t.float() - steps / 2.0) / steps) ** 2)
    return (y - y_min) / (mean + 1e-10)


def inference_schedule(config: FastWAMConfig, num_steps: int | None = None, device=None):
    """Euler schedule: u = linspace(1, 0, n + 1), s = phi(u); returns timesteps 1000 s[:-1] (n,)
    and deltas s[k+1] - s[k] (n,), both float32 (negative deltas: we walk from noise to data)."""
    n = num_steps or config.num_inference_steps
    s = shifted_sigma(torch.linspace(1.0, 0.0, n + 1, device=device, dtype=torch.float32), config.shift)
    return s[:-1] * float(config.num_train_timesteps), s[1:] - s[:-1]


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, config: FastWAMConfig) -> torch.Tensor:
    """x_t = (1 - s) x0 + s eps with s = t / 1000 broadcast per sample."""
    s = (t / float(config.num_train_timesteps)).to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
    return (1 - s) * x0 + s * noise


def latent_pad_from_frames(image_is_pad: torch.Tensor, temporal_compression: int) -> torch.Tensor:
    """(B, 1 + 4k) per-RGB-frame padding -> (B, 1 + k) per latent frame (a latent frame is padded
    when all 4 of its RGB frames are)."""
    b = image_is_pad.shape[0]
    tail = image_is_pad[:, 1:].reshape(b, -1, temporal_compression).all(dim=2)
    return torch.cat([image_is_pad[:, :1], tail], dim=1)


@dataclass
class FlowLoss:
    """total = w_video * video + w_action * action (scalars); predictions for inspection."""

    total: torch.Tensor
    video: torch.Tensor
    action: torch.Tensor
    pred_video: torch.Tensor | None
    pred_action: torch.Tensor


def training_loss(
    model,
    latents: torch.Tensor,
    context: torch.Tensor,
    context_mask: torch.Tensor,
    proprio: torch.Tensor,
    action: torch.Tensor,
    action_is_pad: torch.Tensor | None = None,
    image_is_pad: torch.Tensor | None = None,
    noise_video: torch.Tensor | None = None,
    noise_action: torch.Tensor | None = None,
    t_video: torch.Tensor | None = None,
    t_action: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> FlowLoss:
    """Fast-WAM co-training loss for one batch.

    latents (B, C, F, H, W): clean, normalised VAE latents, frame 0 = current frame;
    context (B, L, text_dim), context_mask (B, L) bool; proprio (B, P) normalised state;
    action (B, Ha, A) normalised chunk; action_is_pad (B, Ha) bool; image_is_pad (B, 1 + 4(F-1))
    bool per RGB frame. Video and action timesteps are drawn independently, one per sample.

    Frame 0 stays clean and is left out of the video loss. With variant "no_video_cotraining"
    only frame 0 is fed (the action output is identical, the mask hides future frames from
    actions) and the loss is the action loss alone.
    """
    config: FastWAMConfig = model.config
    b = latents.shape[0]
    device = latents.device
    video_training = config.variant != "no_video_cotraining"
    if not video_training:
        latents = latents[:, :, :1]
    if t_video is None:
        t_video = sample_timesteps(b, config, generator, device)
    if t_action is None:
        t_action = sample_timesteps(b, config, generator, device)
    if noise_video is None:
        noise_video = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    if noise_action is None:
        noise_action = torch.randn(action.shape, generator=generator, device=device, dtype=action.dtype)
    noise_video = noise_video[:, :, : latents.shape[2]]

    noisy_video = add_noise(latents, noise_video, t_video, config)
    noisy_video[:, :, :1] = latents[:, :, :1]
    noisy_action = add_noise(action, noise_action, t_action, config)
    pred_video, pred_action = model(noisy_video, t_video, noisy_action, t_action, context, context_mask, proprio)

    # Action: mean over A, masked mean over valid steps, weighted per sample, mean over batch.
    per_step = F.mse_loss(pred_action.float(), (noise_action - action).float(), reduction="none").mean(dim=2)
    if action_is_pad is not None:
        valid = (~action_is_pad.bool()).float()
        per_sample = (per_step * valid).sum(1) / valid.sum(1).clamp(min=1.0)
    else:
        per_sample = per_step.mean(1)
    loss_action = (per_sample * loss_weight(t_action, config)).mean()

    if video_training and latents.shape[2] > 1:
        target = (noise_video - latents).float()
        per_frame = F.mse_loss(pred_video.float(), target, reduction="none").mean(dim=(1, 3, 4))[:, 1:]
        if image_is_pad is not None:
            valid = (~latent_pad_from_frames(image_is_pad.bool(), config.temporal_compression)[:, 1:]).float()
            per_sample = (per_frame * valid).sum(1) / valid.sum(1).clamp(min=1.0)
        else:
            per_sample = per_frame.mean(1)
        loss_video = (per_sample * loss_weight(t_video, config)).mean()
    else:
        loss_video = torch.zeros((), device=device)

    total = config.loss_weight_video * loss_video + config.loss_weight_action * loss_action
    return FlowLoss(total, loss_video, loss_action, pred_video if video_training else None, pred_action)
