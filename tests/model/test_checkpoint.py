"""Checkpoints: the released layout key for key, safe loading with typed errors, our folder
format, and the Wan2.2 DiT converters (on tiny random state dicts)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import (
    NormStats,
    init_action_expert_from_video,
    interpolate_to_shape,
    load_checkpoint,
    load_released_checkpoint,
    load_wan_dit_into_video_expert,
    save_checkpoint,
    wan_dit_names,
)
from model.config import get_preset
from model.encoders import build_encoders
from model.errors import CheckpointError, CheckpointMismatch
from model.fastwam import FastWAM

ROOT = Path(__file__).resolve().parents[2]
KEYS_JSON = ROOT.parent / "shared" / "reference" / "fastwam_robotwin_5b_keys.json"


def test_fastwam_5b_has_exactly_the_released_names_and_shapes():
    if not KEYS_JSON.is_file():
        pytest.skip(f"{KEYS_JSON} not found")
    released = json.loads(KEYS_JSON.read_text())
    with torch.device("meta"):
        model = FastWAM(get_preset("fastwam-5b"))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    expected = {k: list(v) for k, v in released["tensors"].items()}
    assert sorted(set(expected) - set(ours)) == [], "missing in our model"
    assert sorted(set(ours) - set(expected)) == [], "not in the release"
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}, "shape differences"
    assert sum(p.numel() for p in model.parameters()) == released["total_parameters"]


def _payload(model: FastWAM) -> dict:
    state = model.state_dict()
    return {
        "mot": {k[len("mot."):]: v for k, v in state.items() if k.startswith("mot.")},
        "proprio_encoder": {k[len("proprio_encoder."):]: v for k, v in state.items() if k.startswith("proprio_encoder.")},
        "step": 7,
        "torch_dtype": "torch.float32",
    }


def test_released_payload_round_trip(tmp_path, tiny_model):
    path = tmp_path / "release.pt"
    torch.save(_payload(tiny_model), path)
    loaded, step = load_released_checkpoint(path, tiny_model.config)
    assert step == 7
    for (k, a), (k2, b) in zip(tiny_model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def test_mismatched_release_names_the_tensors(tmp_path, tiny_model):
    payload = _payload(tiny_model)
    del payload["mot"]["mixtures.action.head.weight"]
    payload["mot"]["mixtures.action.extra.weight"] = torch.zeros(3)
    payload["proprio_encoder"]["weight"] = torch.zeros(5, 5)
    path = tmp_path / "bad.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointMismatch) as info:
        load_released_checkpoint(path, tiny_model.config)
    err = info.value
    assert err.missing == ["mot.mixtures.action.head.weight"]
    assert err.unexpected == ["mot.mixtures.action.extra.weight"]
    assert [m[0] for m in err.shape_mismatches] == ["proprio_encoder.weight"]
    assert "mot.mixtures.action.head.weight" in str(err) and "preset" in str(err)


def test_truncated_and_unsafe_files_raise_checkpoint_error(tmp_path, tiny_model):
    path = tmp_path / "release.pt"
    torch.save(_payload(tiny_model), path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_released_checkpoint(truncated, tiny_model.config)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"mot": {}, "hook": Path("/")}, unsafe)  # an arbitrary object: refused by weights_only
    with pytest.raises(CheckpointError):
        load_released_checkpoint(unsafe, tiny_model.config)
    with pytest.raises(CheckpointError, match="no such file"):
        load_released_checkpoint(tmp_path / "absent.pt", tiny_model.config)


def test_our_folder_round_trip(tmp_path, tiny_model):
    cfg = tiny_model.config
    encoders = build_encoders(cfg)
    stats = NormStats.from_data(np.random.default_rng(0).normal(size=(50, 14)), np.random.default_rng(1).normal(size=(50, 14)))
    save_checkpoint(tmp_path / "ckpt", tiny_model, cfg, stats, 123, encoders)
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"model.safetensors", "config.json", "normalization.json", "step.json"}
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == cfg and loaded.step == 123
    np.testing.assert_array_equal(loaded.norm_stats.action_std, stats.action_std)
    for (k, a), (_, b) in zip(tiny_model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert set(loaded.extra_state) == {"vae", "task_embedding"}
    assert set(loaded.extra_state["vae"]) == set(encoders["vae"].state_dict())

    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="config.json"):
        load_checkpoint(tmp_path)


def test_folder_from_another_preset_is_a_mismatch(tmp_path, tiny_model):
    cfg = tiny_model.config
    save_checkpoint(tmp_path, tiny_model, cfg, NormStats.identity(), 0)
    other = cfg.replace(action_dim=7)
    (tmp_path / "config.json").write_text(json.dumps(other.to_dict()))
    with pytest.raises(CheckpointMismatch) as info:
        load_checkpoint(tmp_path)
    assert "mot.mixtures.action.head.weight" in str(info.value)


# -- Wan2.2 DiT converters ----------------------------------------------------------------------

# Original Wan name -> diffusers WanTransformer3DModel name, per diffusers'
# scripts/convert_wan_to_diffusers.py (written out here independently of our inverse mapping).
_TO_DIFFUSERS = [
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("head.modulation", "scale_shift_table"),
    ("head.head", "proj_out"),
    ("modulation", "scale_shift_table"),
    ("ffn.0", "ffn.net.0.proj"),
    ("ffn.2", "ffn.net.2"),
    ("norm3", "norm2"),
    ("self_attn.o", "attn1.to_out.0"),
    ("self_attn.norm_q", "attn1.norm_q"),
    ("self_attn.norm_k", "attn1.norm_k"),
    ("self_attn.q", "attn1.to_q"),
    ("self_attn.k", "attn1.to_k"),
    ("self_attn.v", "attn1.to_v"),
    ("cross_attn.o", "attn2.to_out.0"),
    ("cross_attn.norm_q", "attn2.norm_q"),
    ("cross_attn.norm_k", "attn2.norm_k"),
    ("cross_attn.q", "attn2.to_q"),
    ("cross_attn.k", "attn2.to_k"),
    ("cross_attn.v", "attn2.to_v"),
]


def _to_diffusers(name: str) -> str:
    for old, new in _TO_DIFFUSERS:
        if old in name:
            return name.replace(old, new, 1)
    return name


def _random_wan_state(model: FastWAM, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) for k, v in model.video.state_dict().items()}


@pytest.mark.parametrize("naming", ["original", "diffusers"])
def test_wan_dit_loads_into_video_expert(naming):
    torch.manual_seed(0)
    model = FastWAM(get_preset("tiny"))
    state = _random_wan_state(model)
    source = state if naming == "original" else {_to_diffusers(k): v for k, v in state.items()}
    if naming == "diffusers":
        assert "blocks.0.attn1.to_out.0.weight" in source and "blocks.0.norm2.weight" in source
        assert "scale_shift_table" in source and "blocks.1.scale_shift_table" in source
    head_before = model.action.head.weight.clone()
    load_wan_dit_into_video_expert(model, source)
    for k, v in model.video.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert torch.equal(model.action.head.weight, head_before)  # action head stays random


def test_wan_dit_with_missing_tensor_is_a_mismatch():
    model = FastWAM(get_preset("tiny"))
    state = _random_wan_state(model)
    del state["blocks.1.cross_attn.k.weight"]
    with pytest.raises(CheckpointMismatch, match="blocks.1.cross_attn.k.weight"):
        load_wan_dit_into_video_expert(model, state)


def test_wan_names_strip_model_prefix():
    assert list(wan_dit_names({"model.blocks.0.self_attn.q.weight": torch.zeros(1)})) == ["blocks.0.self_attn.q.weight"]


def test_interpolation_rule():
    # Last dim 4 -> 2 with align corners keeps the end columns, then scales by sqrt(4/2).
    w = torch.tensor([[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0, 10.0, 11.0]])
    out = interpolate_to_shape(w, (2, 2))
    rows = torch.tensor([[0.0, 3.0], [8.0, 11.0]])  # rows 3 -> 2: first and last rows
    torch.testing.assert_close(out, rows * 2**0.5)
    # Growing the first dim interpolates linearly without scaling; 1-D tensors are never scaled.
    torch.testing.assert_close(interpolate_to_shape(torch.tensor([[0.0], [2.0]]), (3, 1)), torch.tensor([[0.0], [1.0], [2.0]]))
    torch.testing.assert_close(interpolate_to_shape(torch.tensor([0.0, 3.0, 6.0, 9.0]), (2,)), torch.tensor([0.0, 9.0]))


def test_action_expert_initialised_from_video():
    torch.manual_seed(0)
    model = FastWAM(get_preset("tiny"))
    encoder_before = model.action.action_encoder.weight.clone()
    interpolated = init_action_expert_from_video(model)
    video, action = model.video.state_dict(), model.action.state_dict()
    assert "blocks.0.ffn.0.weight" in interpolated
    # q maps hidden -> attn dim: only the input (last) dim shrinks (video -> action width): scaled.
    src, dst = video["blocks.0.self_attn.q.weight"], action["blocks.0.self_attn.q.weight"]
    torch.testing.assert_close(dst[:, 0], src[:, 0] * (src.shape[1] / dst.shape[1]) ** 0.5)
    torch.testing.assert_close(dst[:, -1], src[:, -1] * (src.shape[1] / dst.shape[1]) ** 0.5)
    # Same-shape tensors are copied (norm_q over the shared attn dim).
    assert torch.equal(action["blocks.0.self_attn.norm_q.weight"], video["blocks.0.self_attn.norm_q.weight"])
    assert torch.equal(model.action.action_encoder.weight, encoder_before)


def test_video_expert_matches_diffusers_wan_transformer():
    """diffusers' own WanTransformer3DModel (Wan's layout: hidden = heads x head_dim) loaded into
    our video expert gives the same prediction for a current frame (t = 0, where our first-frame
    mask and per-token timesteps coincide with plain Wan)."""
    diffusers = pytest.importorskip("diffusers", reason="diffusers not installed (pip install diffusers)")
    from model.config import VideoExpertConfig

    base = get_preset("tiny")
    cfg = base.replace(video=VideoExpertConfig(hidden_dim=base.attn_dim, ffn_dim=2 * base.attn_dim, in_dim=16, freq_dim=64))
    torch.manual_seed(0)
    wan = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=cfg.num_heads, attention_head_dim=cfg.attn_head_dim,
        in_channels=cfg.video.in_dim, out_channels=cfg.video.in_dim, text_dim=cfg.text_dim,
        freq_dim=cfg.video.freq_dim, ffn_dim=cfg.video.ffn_dim, num_layers=cfg.num_layers,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=cfg.eps,
    ).eval()
    with torch.no_grad():
        for p in wan.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # no all-ones norms or zero tables
    model = FastWAM(cfg).eval()
    load_wan_dit_into_video_expert(model, wan.state_dict())  # diffusers names, converted
    lh, lw = cfg.latent_hw
    latent = torch.randn(1, cfg.video.in_dim, 1, lh, lw)
    ctx, mask, proprio = torch.randn(1, 3, cfg.text_dim), torch.ones(1, 3, dtype=torch.bool), torch.randn(1, 14)
    with torch.no_grad():
        ours, _ = model(latent, torch.zeros(1), torch.randn(1, cfg.action_horizon, 14), torch.tensor([300.0]), ctx, mask, proprio)
        full_ctx, _ = model.build_context(ctx, mask, proprio)
        theirs = wan(hidden_states=latent, timestep=torch.zeros(1), encoder_hidden_states=full_ctx, return_dict=False)[0]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
