"""The camera canvas, our causal video autoencoder, and the task-string embeddings."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch

from model.config import get_preset
from model.encoders import (
    CausalVideoAutoencoder,
    PrecomputedTextEmbeddings,
    TaskEmbedding,
    WanVideoEncoder,
    canvas_to_tensor,
    make_canvas,
)
from model.errors import MissingCamera, MissingDependency, UnknownTask

COLORS = {"cam_high": (200, 0, 0), "cam_left_wrist": (0, 200, 0), "cam_right_wrist": (0, 0, 200)}


def _cameras(h: int, w: int) -> dict[str, np.ndarray]:
    return {name: np.full((h, w, 3), color, dtype=np.uint8) for name, color in COLORS.items()}


@pytest.mark.parametrize("hw", [(480, 640), (240, 320), (100, 90)])
def test_canvas_layout_for_the_released_size(hw):
    canvas = make_canvas(_cameras(*hw), (384, 320))
    assert canvas.shape == (384, 320, 3) and canvas.dtype == np.uint8
    assert (canvas[:256] == COLORS["cam_high"]).all()  # top 256x320
    assert (canvas[256:, :160] == COLORS["cam_left_wrist"]).all()  # two 128x160 views underneath
    assert (canvas[256:, 160:] == COLORS["cam_right_wrist"]).all()


def test_canvas_of_the_tiny_preset_and_image_content():
    h, w = get_preset("tiny").canvas_hw
    images = _cameras(240, 320)
    images["cam_high"] = np.zeros((240, 320, 3), np.uint8)
    images["cam_high"][:, 160:] = 255  # right half white
    canvas = make_canvas(images, (h, w))
    top = h - h // 3
    assert canvas.shape == (h, w, 3)
    assert canvas[:top, : w // 2 - 2].max() == 0 and canvas[:top, w // 2 + 2 :].min() == 255
    assert (canvas[top:, : w // 2] == COLORS["cam_left_wrist"]).all()


def test_canvas_rejects_missing_or_malformed_cameras():
    images = _cameras(48, 64)
    del images["cam_right_wrist"]
    with pytest.raises(MissingCamera, match="cam_right_wrist"):
        make_canvas(images)
    images = _cameras(48, 64)
    images["cam_high"] = images["cam_high"].astype(np.float32)
    with pytest.raises(ValueError, match="uint8"):
        make_canvas(images)


def test_canvas_to_tensor_range():
    x = canvas_to_tensor(np.array([[[0, 255, 127]]], dtype=np.uint8))
    assert x.shape == (1, 3, 1, 1, 1)
    torch.testing.assert_close(x.flatten(), torch.tensor([-1.0, 1.0, 127 / 127.5 - 1]))


def test_causal_autoencoder_layout_and_causality():
    torch.manual_seed(0)
    vae = CausalVideoAutoencoder(latent_channels=8, channels=(16, 16, 16)).eval()
    video = torch.rand(2, 3, 9, 64, 96) * 2 - 1
    with torch.no_grad():
        z = vae.encode(video)
        assert z.shape == (2, 8, 3, 4, 6)  # 1 + 4k frames -> 1 + k latents, 16x spatial
        later = video.clone()
        later[:, :, 5:] = 0  # change the last group only
        z2 = vae.encode(later)
        assert torch.equal(z[:, :, :2], z2[:, :, :2]) and not torch.equal(z[:, :, 2], z2[:, :, 2])
        assert torch.equal(vae.encode(video[:, :, :1]), z[:, :, :1])  # the current frame encodes alone
        assert vae.decode(z).shape == video.shape
    loss = vae.reconstruction_loss(video)
    loss.backward()
    assert torch.isfinite(loss) and vae.encoder[0].weight.grad is not None
    vae.fit_latent_stats(video)
    with torch.no_grad():
        zn = vae.encode(video)
    torch.testing.assert_close(zn.mean(dim=(0, 2, 3, 4)), torch.zeros(8), atol=1e-4, rtol=0)


def test_learned_task_embedding():
    emb = TaskEmbedding(["fold the towel", "wave"], tokens_per_task=2, text_dim=8)
    ctx, mask = emb(["wave", "fold the towel"])
    assert ctx.shape == (2, 2, 8) and mask.all()
    assert torch.equal(ctx[0], emb(["wave"])[0][0])
    with pytest.raises(UnknownTask, match="fold the towel"):
        emb(["juggle"])


def test_precomputed_text_embeddings_round_trip(tmp_path):
    table = {
        "fold the towel": (torch.randn(5, 16), torch.tensor([1, 1, 1, 0, 0], dtype=torch.bool)),
        "wave": (torch.randn(3, 16), torch.ones(3, dtype=torch.bool)),
    }
    PrecomputedTextEmbeddings.save(tmp_path / "t.safetensors", table)
    texts = PrecomputedTextEmbeddings.load(tmp_path / "t.safetensors")
    ctx, mask = texts(["wave", "fold the towel"])
    assert ctx.shape == (2, 5, 16)
    assert mask.tolist() == [[True, True, True, False, False], [True, True, True, False, False]]
    torch.testing.assert_close(ctx[1], table["fold the towel"][0])
    with pytest.raises(UnknownTask, match="UMT5_PROMPT_TEMPLATE"):
        texts(["juggle"])


def test_wan_vae_without_diffusers_says_pip_install(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "diffusers" or name.startswith("diffusers."):
            raise ImportError("No module named 'diffusers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(MissingDependency, match="pip install diffusers"):
        WanVideoEncoder.from_pretrained(tmp_path)


def test_wan_vae_wrapper_on_a_tiny_random_autoencoder(tmp_path):
    diffusers = pytest.importorskip("diffusers", reason="diffusers not installed (pip install diffusers)")
    torch.manual_seed(0)
    # Wan2.2's layout (residual blocks, 2x2 patchify -> 12 input channels, 16x spatial) at toy width.
    vae = diffusers.AutoencoderKLWan(
        base_dim=8, decoder_base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, is_residual=True,
        patch_size=2, in_channels=12, out_channels=12, scale_factor_spatial=16,
        latents_mean=[0.1, 0.2, 0.3, 0.4], latents_std=[1.0, 2.0, 3.0, 4.0],
    )
    vae.save_pretrained(tmp_path / "vae")
    encoder = WanVideoEncoder.from_pretrained(tmp_path)  # the folder of a full Wan2.2 download
    video = torch.rand(1, 3, 5, 32, 48) * 2 - 1
    z = encoder.encode(video)
    assert z.shape == (1, 4, 2, 2, 3)  # 1 + 4 frames -> 2 latent frames, 16x spatial
    with torch.no_grad():
        mu = vae.encode(video).latent_dist.mode()
    expected = (mu - torch.tensor([0.1, 0.2, 0.3, 0.4])[:, None, None, None]) / torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None, None, None]
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(encoder.encode(video[:, :, :1])[:, :, 0], z[:, :, 0], atol=1e-5, rtol=0)  # causal
    with pytest.raises(Exception, match="not a Wan2.2 VAE folder"):
        WanVideoEncoder.from_pretrained(tmp_path / "vae" / "missing")
