"""Our implementation reproduces every expected_* tensor of the reference folder within 1e-5."""

from __future__ import annotations

import torch

from model.fast_sampler import SinglePassSampler
from model.fastwam import build_attention_mask
from model.flow import inference_schedule, training_loss
from model.sampling import sample_actions, sample_actions_nocache

TOL = 1e-5


def _close(actual, expected, name):
    diff = (actual.float() - expected.float()).abs().max().item()
    assert diff <= TOL, f"{name}: max abs diff {diff:.2e} > {TOL}"


def test_predictions_and_losses(reference):
    model, _, v = reference
    with torch.no_grad():
        out = training_loss(
            model, v["latents"], v["context"], v["context_mask"], v["proprio"][:, 0], v["action"],
            action_is_pad=v["action_is_pad"], noise_video=v["noise_video"], noise_action=v["noise_action"],
            t_video=v["t_video"], t_action=v["t_action"],
        )
    _close(out.pred_video, v["expected_pred_video"], "pred_video")
    _close(out.pred_action, v["expected_pred_action"], "pred_action")
    _close(out.video.reshape(1), v["expected_loss_video"], "loss_video")
    _close(out.action.reshape(1), v["expected_loss_action"], "loss_action")
    _close(out.total.reshape(1), v["expected_loss_total"], "loss_total")


def test_attention_masks(reference):
    _, config, v = reference
    frames, tpf = v["latents"].shape[2], config.tokens_per_frame
    horizon = v["action"].shape[1]
    assert torch.equal(build_attention_mask(frames, tpf, horizon), v["expected_attention_mask"])
    assert torch.equal(build_attention_mask(frames, tpf, horizon, joint=True), v["expected_joint_attention_mask"])


def test_sampler_schedule(reference):
    _, config, v = reference
    timesteps, deltas = inference_schedule(config)
    _close(timesteps, v["expected_infer_timesteps"], "timesteps")
    _close(deltas, v["expected_infer_deltas"], "deltas")


def _infer_args(v):
    return v["infer_first_frame_latent"], v["context"][:1], v["context_mask"][:1], v["proprio"][:1, 0]


def test_single_pass_actions(reference):
    model, _, v = reference
    actions = sample_actions(model, *_infer_args(v), noise=v["infer_init_noise"])
    _close(actions[0], v["expected_infer_actions"], "infer_actions")


def test_fused_single_pass_actions(reference):
    model, _, v = reference
    for kernels in ("cpu", "gpu"):  # "gpu" runs the CUDA code path's maths on the CPU
        actions = SinglePassSampler(model, kernels=kernels)(*_infer_args(v), noise=v["infer_init_noise"])
        _close(actions[0], v["expected_infer_actions"], f"fused[{kernels}]")


def test_nocache_actions(reference):
    model, _, v = reference
    actions = sample_actions_nocache(model, *_infer_args(v), noise=v["infer_init_noise"])
    _close(actions[0], v["expected_infer_actions_nocache"], "infer_actions_nocache")
