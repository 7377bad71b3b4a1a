"""What turns an observation into model inputs: the camera canvas, the video autoencoders, and
the task-string embeddings. Used identically by training and by the policy runtime.

- `make_canvas(images, canvas_hw)`: the ONE function that lays out the three cameras.
- `CausalVideoAutoencoder`: our small causal video autoencoder (tiny/small presets), 16x spatial
  and 4x temporal compression laid out like Wan's (first frame alone, then groups of 4).
- `WanVideoEncoder`: the Wan2.2 VAE through diffusers' `AutoencoderKLWan` (fastwam-5b), from a
  local folder only, with per-channel latent mean/std normalisation.
- `TaskEmbedding` (learned, tiny/small) and `PrecomputedTextEmbeddings` (umT5 file, 5B).

Pixel convention for the autoencoders: video (B, 3, T, H, W) float in [-1, 1], T = 1 + 4k.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from model.config import CANVAS_CAMERAS, FastWAMConfig
from model.errors import MissingCamera, MissingDependency, ModelError, UnknownTask

#: The umT5 prompt of the released model; the task string goes in {task}.
UMT5_PROMPT_TEMPLATE = "A video recorded from a robot's point of view executing the following instruction: {task}"

# ------------------------------------------------------------------------------------------------
# The camera canvas
# ------------------------------------------------------------------------------------------------


def _resize(image: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    if image.shape[:2] == (h, w):
        return image
    # INTER_AREA averages when shrinking (no aliasing); bilinear when enlarging.
    shrink = image.shape[0] >= h and image.shape[1] >= w
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def make_canvas(
    images: Mapping[str, np.ndarray],
    canvas_hw: tuple[int, int] = (384, 320),
    cameras: Sequence[str] = CANVAS_CAMERAS,
) -> np.ndarray:
    """Lay three RGB cameras out as one (H, W, 3) uint8 canvas.

    Top: `cameras[0]` (cam_high) resized to (H - H//3, W). Bottom row, H//3 high: `cameras[1]`
    (left wrist) and `cameras[2]` (right wrist) side by side, W//2 and W - W//2 wide. For the
    released 384x320 canvas this is 256x320 over two 128x160 views. Inputs may have any size;
    each must be (h, w, 3) uint8.
    """
    missing = [c for c in cameras if c not in images]
    if missing:
        raise MissingCamera(missing, list(images))
    for c in cameras:
        img = images[c]
        if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8):
            desc = f"{img.dtype} array of shape {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
            raise ValueError(f"camera {c!r}: expected an (H, W, 3) uint8 RGB image, got a {desc}")
    h, w = canvas_hw
    wrist_h = h // 3
    top_h = h - wrist_h
    left_w = w // 2
    canvas = np.empty((h, w, 3), dtype=np.uint8)
    canvas[:top_h] = _resize(images[cameras[0]], top_h, w)
    canvas[top_h:, :left_w] = _resize(images[cameras[1]], wrist_h, left_w)
    canvas[top_h:, left_w:] = _resize(images[cameras[2]], wrist_h, w - left_w)
    return canvas


def canvas_to_tensor(canvases: np.ndarray | Sequence[np.ndarray], device=None, dtype=torch.float32) -> torch.Tensor:
    """(T, H, W, 3) or a list of (H, W, 3) uint8 canvases -> (1, 3, T, H, W) float in [-1, 1]."""
    arr = np.stack(canvases) if not isinstance(canvases, np.ndarray) else canvases
    if arr.ndim == 3:
        arr = arr[None]
    x = torch.from_numpy(np.ascontiguousarray(arr)).to(device=device)
    return (x.permute(3, 0, 1, 2)[None].to(dtype) / 127.5 - 1.0)


# ------------------------------------------------------------------------------------------------
# Our causal video autoencoder (tiny / small)
# ------------------------------------------------------------------------------------------------


class _ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.silu(self.conv1(F.silu(self.norm(x)))))


class CausalVideoAutoencoder(nn.Module):
    """A small video autoencoder with Wan's latent layout: T = 1 + 4k frames -> 1 + k latent
    frames at 1/16 resolution. Latent frame 0 encodes frame 0 alone; latent frame j >= 1 encodes
    frames 4j-3 .. 4j. Each latent frame depends only on its own frames, so the encoding is
    causal and the current frame can be encoded by itself at inference time.

    Frames of a group are stacked along channels and folded 4x4 into channels (space-to-depth),
    then two stride-2 convolutions reach 1/16. Frame 0 is its own group, repeated 4 times (the
    same network serves both). Latents are normalised per channel by `latent_mean`/`latent_std`
    (buffers saved with the weights; set them with `fit_latent_stats` after training).
    """

    def __init__(self, latent_channels: int = 16, channels: tuple[int, int, int] = (64, 96, 128)):
        super().__init__()
        c0, c1, c2 = channels
        self.latent_channels = latent_channels
        group_in = 3 * 4 * 16  # 4 frames x RGB x (4x4 space-to-depth)
        # Residual blocks only at 1/8 and 1/16: the 1/4 level has 16x the pixels and would
        # dominate training time on a CPU for little gain at these sizes.
        self.encoder = nn.Sequential(
            nn.Conv2d(group_in, c0, 1), nn.SiLU(),
            nn.Conv2d(c0, c1, 3, stride=2, padding=1), _ResBlock(c1),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), _ResBlock(c2),
            nn.GroupNorm(8, c2), nn.SiLU(), nn.Conv2d(c2, latent_channels, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, c2, 3, padding=1), _ResBlock(c2),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c2, c1, 3, padding=1), _ResBlock(c1),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c1, c0, 3, padding=1),
            nn.GroupNorm(8, c0), nn.SiLU(), nn.Conv2d(c0, group_in, 1),
        )
        self.register_buffer("latent_mean", torch.zeros(latent_channels))
        self.register_buffer("latent_std", torch.ones(latent_channels))

    @staticmethod
    def _groups(video: torch.Tensor) -> torch.Tensor:
        """(B, 3, 1 + 4k, H, W) -> (B * (1 + k), 12, H, W): frame 0 repeated 4x, then groups of 4."""
        b, c, t, h, w = video.shape
        if (t - 1) % 4:
            raise ValueError(f"video must have 1 + 4k frames, got {t}")
        first = video[:, :, :1].expand(b, c, 4, h, w)
        groups = torch.cat([first, video[:, :, 1:]], dim=2).unflatten(2, (-1, 4))  # (B, 3, G, 4, H, W)
        return groups.permute(0, 2, 3, 1, 4, 5).reshape(-1, 4 * c, h, w)

    def encode_raw(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, 1 + 4k, H, W) in [-1, 1] -> un-normalised latents (B, C, 1 + k, H/16, W/16)."""
        b, _, _, h, w = video.shape
        if h % 16 or w % 16:
            raise ValueError(f"frame size {h}x{w} must be a multiple of 16")
        x = F.pixel_unshuffle(self._groups(video), 4)
        z = self.encoder(x.to(self.latent_mean.dtype))
        return z.unflatten(0, (b, -1)).transpose(1, 2)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, 1 + k, H/16, W/16): what the DiT sees."""
        z = self.encode_raw(video)
        return (z - self.latent_mean[:, None, None, None]) / self.latent_std[:, None, None, None]

    def encode_groups(self, groups: torch.Tensor) -> torch.Tensor:
        """Independent 4-frame groups (N, 4, 3, H, W) in [-1, 1] -> normalised latents (N, C, H/16, W/16).

        `encode`'s latent frame j >= 1 is exactly this of its 4 frames, and latent frame 0 is this
        of frame 0 repeated 4 times; the latent cache uses it to encode each distinct group of an
        episode once instead of every overlapping window."""
        n, four, c, h, w = groups.shape
        if four != 4 or c != 3:
            raise ValueError(f"groups must have shape (N, 4, 3, H, W), got {tuple(groups.shape)}")
        if h % 16 or w % 16:
            raise ValueError(f"frame size {h}x{w} must be a multiple of 16")
        x = F.pixel_unshuffle(groups.reshape(n, 4 * c, h, w), 4)  # channels frame-major, as _groups
        z = self.encoder(x.to(self.latent_mean.dtype))
        return (z - self.latent_mean[:, None, None]) / self.latent_std[:, None, None]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, 1 + k, h, w) -> video (B, 3, 1 + 4k, 16h, 16w) in about [-1, 1]."""
        b, c, g = latents.shape[:3]
        z = latents * self.latent_std[:, None, None, None] + self.latent_mean[:, None, None, None]
        x = F.pixel_shuffle(self.decoder(z.transpose(1, 2).flatten(0, 1)), 4)  # (B*G, 12, H, W)
        x = x.unflatten(1, (4, 3)).unflatten(0, (b, g))  # (B, G, 4, 3, H, W)
        frames = torch.cat([x[:, 0, -1:], x[:, 1:].flatten(1, 2)], dim=1)  # frame 0 once, then 4 per group
        return frames.permute(0, 2, 1, 3, 4)

    def reconstruction_loss(self, video: torch.Tensor) -> torch.Tensor:
        """Mean squared error of decode(encode(video)) against video (the first group's target is
        frame 0 repeated, so every decoded frame of it learns to reproduce frame 0), plus a small
        L2 pull on the latents to keep their scale bounded. Groups are independent, so training
        may feed short clips (1 or 5 frames) to save time."""
        z = self.encode_raw(video)
        x = F.pixel_shuffle(self.decoder(z.transpose(1, 2).flatten(0, 1)), 4)
        return F.mse_loss(x, self._groups(video).to(x.dtype)) + 1e-4 * z.pow(2).mean()

    @torch.no_grad()
    def fit_latent_stats(self, video: torch.Tensor) -> None:
        """Set the per-channel normalisation from a batch of training clips."""
        z = self.encode_raw(video)
        self.latent_mean.copy_(z.mean(dim=(0, 2, 3, 4)))
        self.latent_std.copy_(z.std(dim=(0, 2, 3, 4)).clamp(min=1e-4))


# ------------------------------------------------------------------------------------------------
# The Wan2.2 VAE (fastwam-5b)
# ------------------------------------------------------------------------------------------------


class WanVideoEncoder(nn.Module):
    """diffusers `AutoencoderKLWan` (Wan2.2, 48 latent channels) with per-channel normalisation
    z = (mu - latents_mean) / latents_std, as the Wan pipelines do. Deterministic (posterior mean).
    """

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae
        cfg = vae.config
        self.register_buffer("latent_mean", torch.tensor(cfg.latents_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("latent_std", torch.tensor(cfg.latents_std, dtype=torch.float32), persistent=False)

    @classmethod
    def from_pretrained(cls, folder, device=None, dtype=torch.float32) -> "WanVideoEncoder":
        """Load from a local Wan2.2-TI2V-5B folder (with a `vae/` subfolder) or a VAE folder.
        Never touches the network."""
        try:
            from diffusers import AutoencoderKLWan
        except ImportError as exc:
            raise MissingDependency("diffusers", "The Wan2.2 VAE of the fastwam-5b preset") from exc
        folder = Path(folder)
        sub = "vae" if (folder / "vae").is_dir() else None
        if not (folder / (sub or "") / "config.json").is_file():
            raise ModelError(
                f"{folder} is not a Wan2.2 VAE folder (no {'vae/' if sub else ''}config.json); point to the local "
                "Wan2.2-TI2V-5B-Diffusers download (it holds vae/config.json and the VAE weights)"
            )
        vae = AutoencoderKLWan.from_pretrained(folder, subfolder=sub, local_files_only=True, torch_dtype=dtype)
        return cls(vae.eval().requires_grad_(False)).to(device)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, 1 + 4k, H, W) in [-1, 1] -> normalised latents (B, 48, 1 + k, H/16, W/16)."""
        dtype = next(self.vae.parameters()).dtype
        mu = self.vae.encode(video.to(dtype)).latent_dist.mode().float()
        return (mu - self.latent_mean[:, None, None, None]) / self.latent_std[:, None, None, None]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        dtype = next(self.vae.parameters()).dtype
        z = latents * self.latent_std[:, None, None, None] + self.latent_mean[:, None, None, None]
        return self.vae.decode(z.to(dtype)).sample


# ------------------------------------------------------------------------------------------------
# Task strings -> context tokens
# ------------------------------------------------------------------------------------------------


class TaskEmbedding(nn.Module):
    """A learned context per task string (tiny/small): `tokens_per_task` tokens of `text_dim`.

    The task list (string -> row) is part of the config, so a checkpoint knows its tasks.
    """

    def __init__(self, tasks: Sequence[str], tokens_per_task: int, text_dim: int):
        super().__init__()
        self.tasks = list(tasks)
        self.index = {t: i for i, t in enumerate(self.tasks)}
        self.tokens_per_task = tokens_per_task
        self.embedding = nn.Embedding(len(self.tasks), tokens_per_task * text_dim)
        nn.init.normal_(self.embedding.weight, std=1.0)  # unit scale, like normalised umT5 features

    def forward(self, tasks: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """B task strings -> context (B, tokens_per_task, text_dim), mask (B, tokens_per_task) all True."""
        rows = []
        for t in tasks:
            if t not in self.index:
                raise UnknownTask(t, self.tasks, "This model was trained on the tasks listed; pick one of them "
                                  "or fine-tune with the new task added to encoder.tasks.")
            rows.append(self.index[t])
        idx = torch.tensor(rows, device=self.embedding.weight.device)
        ctx = self.embedding(idx).view(len(rows), self.tokens_per_task, -1)
        return ctx, torch.ones(ctx.shape[:2], dtype=torch.bool, device=ctx.device)


class PrecomputedTextEmbeddings:
    """umT5 embeddings computed offline, one per task string, read from a safetensors file.

    File layout: for each task string T, tensor `T` (L, text_dim) and tensor `T::mask` (L,)
    (bool or 0/1). Write one with `save(path, {task: (embedding, mask)})`.
    """

    MASK_SUFFIX = "::mask"

    def __init__(self, table: Mapping[str, tuple[torch.Tensor, torch.Tensor]]):
        self.table = dict(table)

    @classmethod
    def load(cls, path) -> "PrecomputedTextEmbeddings":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        table = {}
        for key, value in tensors.items():
            if key.endswith(cls.MASK_SUFFIX):
                continue
            mask = tensors.get(key + cls.MASK_SUFFIX)
            table[key] = (value, torch.ones(value.shape[0], dtype=torch.bool) if mask is None else mask.bool())
        return cls(table)

    @classmethod
    def save(cls, path, table: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        from safetensors.torch import save_file

        tensors = {}
        for task, (emb, mask) in table.items():
            tensors[task] = emb.contiguous()
            tensors[task + cls.MASK_SUFFIX] = mask.to(torch.bool).contiguous()
        save_file(tensors, str(path))

    def __call__(self, tasks: Sequence[str], device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """B task strings -> context (B, L_max, text_dim) zero-padded, mask (B, L_max)."""
        entries = []
        for t in tasks:
            if t not in self.table:
                raise UnknownTask(t, sorted(self.table), "Precompute its umT5 embedding (prompt template "
                                  "model.encoders.UMT5_PROMPT_TEMPLATE) and add it to the embeddings file.")
            entries.append(self.table[t])
        length = max(e.shape[0] for e, _ in entries)
        ctx = torch.zeros((len(entries), length, entries[0][0].shape[1]), dtype=dtype)
        mask = torch.zeros((len(entries), length), dtype=torch.bool)
        for i, (emb, m) in enumerate(entries):
            ctx[i, : emb.shape[0]] = emb.to(dtype)
            mask[i, : m.shape[0]] = m
        return ctx.to(device), mask.to(device)


def build_encoders(config: FastWAMConfig) -> dict[str, nn.Module]:
    """The trainable encoder modules of a tiny/small preset, by checkpoint prefix:
    {"vae": CausalVideoAutoencoder, "task_embedding": TaskEmbedding}. Empty for Wan/umT5."""
    mods: dict[str, nn.Module] = {}
    enc = config.encoder
    if enc.vae == "causal_conv":
        mods["vae"] = CausalVideoAutoencoder(config.video.in_dim, enc.vae_channels)
    if enc.text == "learned":
        mods["task_embedding"] = TaskEmbedding(enc.tasks, enc.tokens_per_task, config.text_dim)
    return mods
