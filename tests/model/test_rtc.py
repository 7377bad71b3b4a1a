"""Real-time chunking's guided sampler (model/rtc.py).

Two levels: the guided Euler walk against the exact velocity of Gaussian data (the posterior mean
is known in closed form, so the sign, the time convention and the pull of the guidance can be
checked against what they must be), and the Fast-WAM wiring on a random tiny model (weight 0 is
the plain sampler bit for bit, the policy's own chunk as prefix changes nothing that matters, a
far prefix is followed where the mask says)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.config import get_preset
from model.execution import prefix_weights
from model.flow import inference_schedule
from model.rtc import guidance_weight, guided_denoise, sample_actions_guided
from model.sampling import sample_actions

H, A = 8, 3
FROZEN, OVERLAP = 3, 6


def gaussian_velocity(mean: float, std: float):
    """The exact velocity (eps - x0 convention) of the flow whose data are N(mean, std^2) per entry:
    x0_hat = E[x0 | x_s] in closed form, v = (x_s - x0_hat) / s."""

    def velocity(x: torch.Tensor, s: float) -> torch.Tensor:
        var = (1 - s) ** 2 * std**2 + s**2
        clean = mean + (1 - s) * std**2 * (x - (1 - s) * mean) / var
        return (x - clean) / s

    return velocity


def walk(velocity, prefix, weights, beta, seed=0, steps=10):
    config = get_preset("tiny")
    timesteps, deltas = inference_schedule(config, steps)
    levels = (timesteps / float(config.num_train_timesteps)).tolist()
    noise = torch.randn((4, H, A), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return guided_denoise(lambda x, i: velocity(x, levels[i]), noise, levels, deltas.double(), prefix,
                          torch.as_tensor(weights), beta).double()


def test_guidance_weight_is_the_papers_and_clipped():
    # (1 - tau) / (tau r^2) with tau = 1 - s, r^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2).
    for s in (0.2, 0.5, 0.7):
        tau = 1 - s
        r2 = (1 - tau) ** 2 / (tau**2 + (1 - tau) ** 2)
        assert guidance_weight(s, 100.0) == pytest.approx((1 - tau) / (tau * r2))
    assert guidance_weight(0.5, 100.0) == pytest.approx(2.0)  # its minimum
    assert guidance_weight(0.99, 5.0) == 5.0 and guidance_weight(1.0, 5.0) == 5.0 and guidance_weight(0.0, 5.0) == 5.0


def test_guidance_pulls_the_frozen_actions_to_the_prefix_and_leaves_the_rest():
    """Data N(0, 1): a prefix at +2 is pulled towards ever closer as beta grows up to the default 5
    (a flipped sign or time convention would push away), only where the mask is non-zero."""
    velocity = gaussian_velocity(0.0, 1.0)
    prefix = torch.full((4, H, A), 2.0, dtype=torch.float64)
    weights = prefix_weights(FROZEN, OVERLAP, H)
    free = walk(velocity, prefix, np.zeros(H, np.float32), 1.0)
    errors = []
    for beta in (0.5, 1.0, 2.0, 5.0):
        guided = walk(velocity, prefix, weights, beta)
        errors.append(float((guided[:, :FROZEN] - prefix[:, :FROZEN]).abs().mean()))
        # Entries are independent under this data: what the mask leaves out is not touched at all.
        torch.testing.assert_close(guided[:, OVERLAP:], free[:, OVERLAP:])
    unguided = float((free[:, :FROZEN] - prefix[:, :FROZEN]).abs().mean())
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.1 * unguided, (errors, unguided)
    # Across the overlap the pull follows the mask: strongest next to the frozen actions.
    guided = walk(velocity, prefix, weights, 5.0)
    pull = ((guided - free) / (prefix - free)).mean(dim=(0, 2))
    assert np.all(np.diff(pull[FROZEN - 1 : OVERLAP].numpy()) < 0) and float(pull[OVERLAP - 1]) > 0


def test_a_near_deterministic_flow_is_in_painted_too():
    """Why the Jacobian is taken as the identity (model/rtc.py): when the data hardly vary (std 0.05
    here, a policy that gives the same chunk whatever the noise, as our trained one does), x0_hat
    barely follows x_s, so the paper's e^T d x0_hat / d x_s would pull by next to nothing; the
    correction e itself still brings the frozen actions to the prefix."""
    velocity = gaussian_velocity(0.0, 0.05)
    config = get_preset("tiny")
    levels = (inference_schedule(config, 10)[0] / float(config.num_train_timesteps)).tolist()
    for s in levels:
        x = torch.randn((H, A), dtype=torch.float64, requires_grad=True)
        (slope,) = torch.autograd.grad((x - s * velocity(x, s)).sum(), x)
        assert float(slope.abs().max()) < 0.06  # d x0_hat / d x_s, the same for every entry here
    prefix = torch.full((4, H, A), 1.0, dtype=torch.float64)
    free = walk(velocity, prefix, np.zeros(H, np.float32), 5.0)
    guided = walk(velocity, prefix, prefix_weights(FROZEN, OVERLAP, H), 5.0)
    before = float((prefix[:, :FROZEN] - free[:, :FROZEN]).abs().mean())
    after = float((prefix[:, :FROZEN] - guided[:, :FROZEN]).abs().mean())
    assert after < 0.2 * before, (after, before)


# -- the Fast-WAM wiring -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tiny_model, random_inputs):
    config = tiny_model.config
    latents, ctx, mask, proprio = random_inputs(config, batch=1, frames=1)
    noise = torch.randn((1, config.action_horizon, config.action_dim), generator=torch.Generator().manual_seed(3))
    return latents, ctx, mask, proprio, noise


def guided(model, inputs, prefix, weights, beta=5.0, noise=None):
    latents, ctx, mask, proprio, default_noise = inputs
    actions, _ = sample_actions_guided(model, latents, ctx, mask, proprio, prefix, torch.as_tensor(weights), beta,
                                       default_noise if noise is None else noise)
    return actions


def test_weight_zero_is_the_plain_single_pass_sampler_bit_for_bit(tiny_model, inputs):
    latents, ctx, mask, proprio, noise = inputs
    horizon = tiny_model.config.action_horizon
    plain = sample_actions(tiny_model, latents, ctx, mask, proprio, noise=noise)
    far = torch.full_like(plain, 3.0)
    assert torch.equal(guided(tiny_model, inputs, far, np.zeros(horizon, np.float32)), plain)


def test_the_policys_own_chunk_as_prefix_changes_nothing_that_matters(tiny_model, inputs):
    latents, ctx, mask, proprio, noise = inputs
    horizon = tiny_model.config.action_horizon
    own = sample_actions(tiny_model, latents, ctx, mask, proprio, noise=noise)
    other = sample_actions(tiny_model, latents, ctx, mask, proprio, noise=torch.randn_like(noise))
    result = guided(tiny_model, inputs, own, prefix_weights(4, horizon - 8, horizon))
    assert float((result - own).abs().max()) < 0.05 * float((other - own).abs().max())


def test_a_far_prefix_is_followed_where_frozen_and_the_seam_stays_smooth(tiny_model, inputs):
    latents, ctx, mask, proprio, noise = inputs
    horizon = tiny_model.config.action_horizon
    frozen, overlap = 4, horizon - 8
    plain = sample_actions(tiny_model, latents, ctx, mask, proprio, noise=noise)
    ramp = torch.linspace(0.0, 1.0, horizon).view(1, -1, 1)
    far = plain + 1.0 + ramp  # a smooth plan one to two (normalised) units away
    weights = prefix_weights(frozen, overlap, horizon)
    errors = []
    for beta in (1.0, 2.0, 5.0):
        result = guided(tiny_model, inputs, far, weights, beta)
        errors.append(float((result[0, :frozen] - far[0, :frozen]).abs().mean()))
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.3 * float((plain[0, :frozen] - far[0, :frozen]).abs().mean())
    result = guided(tiny_model, inputs, far, weights, 5.0)
    # Smooth: no step between neighbouring actions larger than the plain chunk's plus the prefix's own.
    steps = (result[0, 1:] - result[0, :-1]).abs().max()
    assert float(steps) <= float((plain[0, 1:] - plain[0, :-1]).abs().max()) + float(ramp.diff(dim=1).max()) + 0.1
    # Beyond the overlap the plain chunk is (nearly) kept.
    assert float((result[0, overlap + 2 :] - plain[0, overlap + 2 :]).abs().mean()) < 0.2
