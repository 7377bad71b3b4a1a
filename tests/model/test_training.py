"""`tiny` learns: it overfits one batch on the CPU (loss falls 10x) well within a minute."""

from __future__ import annotations

import time

import torch

from model.config import get_preset
from model.fastwam import FastWAM
from model.flow import loss_weight, sample_timesteps, training_loss


def test_tiny_overfits_one_batch():
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    model = FastWAM(cfg).train()
    g = torch.Generator().manual_seed(0)
    b, (lh, lw) = 2, cfg.latent_hw
    latents = torch.randn((b, cfg.video.in_dim, cfg.latent_frames, lh, lw), generator=g)
    ctx, mask = torch.randn((b, 2, cfg.text_dim), generator=g), torch.ones((b, 2), dtype=torch.bool)
    proprio = torch.randn((b, cfg.proprio_dim), generator=g)
    action = torch.randn((b, cfg.action_horizon, cfg.action_dim), generator=g)
    pad = torch.zeros((b, cfg.action_horizon), dtype=torch.bool)
    pad[1, -4:] = True
    draws = dict(  # one fixed batch: the noise and timesteps are part of it
        noise_video=torch.randn(latents.shape, generator=g), noise_action=torch.randn(action.shape, generator=g),
        t_video=torch.tensor([300.0, 700.0]), t_action=torch.tensor([500.0, 200.0]),
    )
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95))
    start = time.perf_counter()
    losses = []
    for _ in range(60):
        out = training_loss(model, latents, ctx, mask, proprio, action, action_is_pad=pad, **draws)
        opt.zero_grad()
        out.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(out.total.item())
        if losses[-1] < losses[0] / 10 and len(losses) > 1:
            break
    elapsed = time.perf_counter() - start
    assert losses[-1] < losses[0] / 10, f"loss {losses[0]:.3f} -> {losses[-1]:.3f} in {len(losses)} steps"
    assert elapsed < 60, f"took {elapsed:.1f} s"


def test_no_video_cotraining_variant_trains_actions_only(random_inputs):
    cfg = get_preset("tiny", variant="no_video_cotraining")
    model = FastWAM(cfg)
    latents, ctx, mask, proprio = random_inputs(cfg)
    action = torch.randn((1, cfg.action_horizon, cfg.action_dim))
    out = training_loss(model, latents, ctx, mask, proprio, action, generator=torch.Generator().manual_seed(0))
    assert out.video.item() == 0.0 and out.pred_video is None
    assert torch.equal(out.total, out.action)
    out.total.backward()
    assert model.video.head.head.weight.grad is None or model.video.head.head.weight.grad.abs().sum() == 0


def test_timestep_sampling_and_weights():
    cfg = get_preset("tiny")
    t = sample_timesteps(10000, cfg, torch.Generator().manual_seed(0))
    assert 0 <= t.min() and t.max() <= 1000
    assert (t > 500).float().mean() > 0.75  # shift 5 favours high noise: P(s > 0.5) = 1 - 1/6
    grid = torch.linspace(1, 0, 1001)[:-1]
    grid = 5 * grid / (1 + 4 * grid) * 1000
    torch.testing.assert_close(loss_weight(grid, cfg).mean(), torch.tensor(1.0), atol=1e-4, rtol=0)
    assert loss_weight(torch.tensor([500.0]), cfg) > loss_weight(torch.tensor([990.0]), cfg)
