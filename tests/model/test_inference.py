"""Single-pass inference is exact: cached == recomputed, and future frames cannot reach actions."""

from __future__ import annotations

import torch

from model.fast_sampler import SinglePassSampler
from model.sampling import sample_actions, sample_actions_nocache, sample_joint


def test_cached_equals_full_recomputation(tiny_model, random_inputs):
    cfg = tiny_model.config
    latents, ctx, mask, proprio = random_inputs(cfg, batch=2)
    noise = torch.randn((2, cfg.action_horizon, cfg.action_dim), generator=torch.Generator().manual_seed(1))
    first = latents[:, :, :1]
    cached = sample_actions(tiny_model, first, ctx, mask, proprio, noise=noise)
    full = sample_actions_nocache(tiny_model, first, ctx, mask, proprio, noise=noise)
    fused = SinglePassSampler(tiny_model)(first, ctx, mask, proprio, noise=noise)
    # Joint sampling with the Fast-WAM mask denoises future video too, yet the actions cannot see it.
    joint_fastwam_mask, _ = sample_joint(tiny_model, first, ctx, mask, proprio, noise=noise, joint=False)
    assert cached.abs().max() > 0.1  # informative outputs, not all zeros
    for name, other in (("nocache", full), ("fused", fused), ("joint_with_fastwam_mask", joint_fastwam_mask)):
        diff = (cached - other).abs().max().item()
        assert diff < 1e-5, f"{name}: {diff:.2e}"


def test_future_frames_do_not_change_actions(tiny_model, random_inputs):
    cfg = tiny_model.config
    latents, ctx, mask, proprio = random_inputs(cfg)
    action = torch.randn((1, cfg.action_horizon, cfg.action_dim))
    t = torch.tensor([700.0])
    other = latents.clone()
    other[:, :, 1:] = torch.randn_like(other[:, :, 1:]) * 3
    with torch.no_grad():
        video_a, act_a = tiny_model(latents, t, action, t, ctx, mask, proprio)
        video_b, act_b = tiny_model(other, t, action, t, ctx, mask, proprio)
        _, act_first_only = tiny_model(latents[:, :, :1], t, action, t, ctx, mask, proprio)
        _, act_joint_a = tiny_model(latents, t, action, t, ctx, mask, proprio, joint=True)
        _, act_joint_b = tiny_model(other, t, action, t, ctx, mask, proprio, joint=True)
    assert (act_a - act_b).abs().max() < 1e-5  # the mask holds
    assert (act_a - act_first_only).abs().max() < 1e-5  # future frames are not even needed
    assert (video_a[:, :, 0] - video_b[:, :, 0]).abs().max() < 1e-5  # the current frame sees only itself
    assert (video_a[:, :, 1:] - video_b[:, :, 1:]).abs().max() > 1e-3  # future video does change
    assert (act_joint_a - act_joint_b).abs().max() > 1e-4  # the Joint variant's actions see the future


def test_joint_sampler_returns_imagined_video(tiny_model, random_inputs):
    cfg = tiny_model.config
    latents, ctx, mask, proprio = random_inputs(cfg)
    actions, video = sample_joint(tiny_model, latents[:, :, :1], ctx, mask, proprio,
                                  generator=torch.Generator().manual_seed(0), joint=True, num_steps=2)
    assert actions.shape == (1, cfg.action_horizon, cfg.action_dim)
    assert video.shape == (1, cfg.video.in_dim, cfg.latent_frames, *cfg.latent_hw)
    assert torch.equal(video[:, :, :1], latents[:, :, :1])  # the current frame is kept clean
    assert torch.isfinite(actions).all() and torch.isfinite(video).all()
