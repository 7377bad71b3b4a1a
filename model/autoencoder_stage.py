"""Stage 1 of a tiny/small run: our causal video autoencoder, pretrained on the training
episodes' canvases (reconstruction), its latent statistics fitted, then frozen - as Fast-WAM
freezes the Wan2.2 VAE. Training it jointly with the DiT would move the DiT's targets under it
and make every epoch re-encode every frame.

It is kept in the run folder's autoencoder/ (so a restarted run does not redo it) and saved inside
every checkpoint (tensors `vae.*`), so `--vae-from` can reuse it from a run folder, its
autoencoder/ folder or a checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from model.checkpoint import check_state_dict, read_tensors
from model.config import FastWAMConfig
from model.data import CanvasSpec, EpisodeInfo, EpisodeSource, SampleStream, WindowDataset, WindowSpec, video_to_model
from model.distributed import DistContext
from model.encoders import CausalVideoAutoencoder
from model.errors import CheckpointError
from model.resume import resolve_checkpoint
from model.run_folder import (
    AUTOENCODER_DIR,
    AUTOENCODER_META,
    AUTOENCODER_WEIGHTS,
    MODEL_FILE,
    Event,
    rounded,
    write_json,
)
from model.train_module import StepBatches
from model.train_options import TrainHyper


#: What the stage reports with: `emit(event, **fields)` (the trainer's `RunEvents`).
Emit = Callable[..., None]


def save_autoencoder(folder: Path, vae: CausalVideoAutoencoder, meta: dict[str, Any]) -> None:
    """The weights and `meta` (the stage's summary) into `folder`, replacing it whole: written
    beside it and renamed, so a cancel mid-save leaves the old folder or none, never half."""
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in vae.state_dict().items()}, str(tmp / AUTOENCODER_WEIGHTS))
    write_json(tmp / AUTOENCODER_META, meta)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def load_autoencoder(path: str | os.PathLike, config: FastWAMConfig) -> CausalVideoAutoencoder:
    """From a run folder, its autoencoder/ folder, or a checkpoint folder (tensors `vae.*`)."""
    from safetensors import safe_open

    path = Path(path)
    vae = CausalVideoAutoencoder(config.video.in_dim, config.encoder.vae_channels)
    for candidate in (path / AUTOENCODER_DIR / AUTOENCODER_WEIGHTS, path / AUTOENCODER_WEIGHTS):
        if candidate.is_file():
            state = read_tensors(candidate)
            break
    else:
        ckpt = path / MODEL_FILE if (path / MODEL_FILE).is_file() else resolve_checkpoint(path) / MODEL_FILE
        with safe_open(str(ckpt), framework="pt") as handle:
            state = {k[len("vae."):]: handle.get_tensor(k) for k in handle.keys() if k.startswith("vae.")}
        if not state:
            raise CheckpointError(ckpt, "it holds no autoencoder (vae.*) tensors",
                                  "Pass a run folder or a tiny/small checkpoint to --vae-from.")
        candidate = ckpt
    check_state_dict(candidate, vae.state_dict(), state, "this preset's causal autoencoder")
    vae.load_state_dict(state)
    return vae


def pretrain_autoencoder(
    vae: CausalVideoAutoencoder,
    episodes: Sequence[EpisodeInfo],
    canvases: Sequence,
    canvas: CanvasSpec,
    window: WindowSpec,
    hyper: TrainHyper,
    seed: int,
    device: torch.device,
    workers: int,
    emit: Emit,
    cancelled: Callable[[], bool],
) -> dict[str, Any]:
    """Train the autoencoder to reconstruct training clips (the first 5 frames of the windows
    the DiT will see), then fit its per-channel latent statistics on whole windows. Returns a
    summary for the run folder. canvases: each episode's cached canvases (or None to decode its
    frames for every clip). A cancel (`cancelled()`) raises KeyboardInterrupt between steps."""
    dataset = WindowDataset([EpisodeSource(info, 0, canvases=c) for info, c in zip(episodes, canvases)], window,
                            canvas, mode="frames")
    stream = SampleStream(len(dataset), seed + 7919)  # its own order, not the DiT's
    steps, batch = hyper.vae_steps, hyper.vae_batch_size
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=StepBatches(stream, 0, steps, batch, DistContext()),
                                         num_workers=workers, persistent_workers=False)
    vae.to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=hyper.vae_lr, betas=(0.9, 0.95), weight_decay=0.0)
    schedule = dataclasses.replace(hyper, steps=max(1, steps), lr=hyper.vae_lr, min_lr_fraction=0.1)
    started = time.monotonic()
    window_loss, window_n, last_log = 0.0, 0, started
    loss_value = float("nan")
    for step, item in enumerate(loader):
        for group in opt.param_groups:
            group["lr"] = schedule.lr_at(step)
        # The current frame's group and the first future group: the two kinds of group the DiT
        # sees, for 2/3 of the price of the whole 9-frame window.
        video = video_to_model(item["video"][:, : 1 + window.temporal_compression]).to(device)
        loss = vae.reconstruction_loss(video)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        loss_value = float(loss.item())
        window_loss += loss_value
        window_n += 1
        if (step + 1) % hyper.log_every == 0 or step + 1 == steps:
            now = time.monotonic()
            rate = window_n * batch / max(1e-9, now - last_log)
            emit(Event.AUTOENCODER, step=step + 1, steps=steps, loss=rounded(window_loss / window_n),
                 samples_per_s=rounded(rate, 4), eta_s=round((steps - step - 1) * batch / max(rate, 1e-9), 1))
            window_loss, window_n, last_log = 0.0, 0, now
        if cancelled():
            raise KeyboardInterrupt
    # Latent statistics from a fixed sample of training windows.
    vae.eval()
    picks = np.linspace(0, len(dataset) - 1, num=min(len(dataset), 64)).astype(int)
    clips = torch.stack([dataset[int(i)]["video"] for i in picks])
    vae.fit_latent_stats(video_to_model(clips).to(device))
    dataset.close()
    return {"steps": steps, "batch_size": batch, "final_loss": loss_value, "seconds": round(time.monotonic() - started, 1),
            "episodes": [info.name for info in episodes]}


def has_vae(path: str | os.PathLike) -> bool:
    """Whether the checkpoint folder `path` carries an autoencoder (tensors `vae.*`)."""
    from safetensors import safe_open

    weights = Path(path) / MODEL_FILE
    if not weights.is_file():
        return False
    with safe_open(str(weights), framework="pt") as handle:
        return any(k.startswith("vae.") for k in handle.keys())
