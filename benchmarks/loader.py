"""Benchmark: does loading keep up with training? Samples/s of the data loader alone against the
training step, for the tiny preset (or another) on real episode files.

    .venv/bin/python benchmarks/loader.py --episodes DIR [--max-episodes 5] [--preset tiny]
        [--batch-size 32] [--vae-batch-size 8] [--workers 0 1 2] [--batches 20] [--threads 1]

Prints JSON lines on stdout:
- "cache_build": seconds to encode an episode into the latent cache (the first-epoch cost),
  per episode and per step, with an untrained autoencoder of the preset's size (same cost);
- "canvas_build": seconds to decode an episode's frames into the canvas cache;
- "loader": samples/s of a DataLoader over cached latents (what the DiT trains on), over cached
  canvases (what the autoencoder stage trains on) and over frames decoded from the episode
  files (the autoencoder stage without the canvas cache), for each worker count;
- "train_step": samples/s of one DiT optimisation step (forward, backward, AdamW) at the batch
  size, and of one autoencoder step, on this machine;
- "verdict": the loader's best rate over the step's rate for each stage (> 1: loading keeps up).
The 1-minute load average is printed with each line: on a shared machine numbers move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from model.config import get_preset  # noqa: E402
from model.data import CanvasSpec, EpisodeFilter, EpisodeSource, WindowDataset, WindowSpec, find_episodes, video_to_model  # noqa: E402
from model.encoders import CausalVideoAutoencoder, TaskEmbedding  # noqa: E402
from model.fastwam import FastWAM  # noqa: E402
from model.latent_cache import CanvasCache, LatentCache, encoder_key  # noqa: E402
from model.normalization import compute_norm_stats  # noqa: E402
from model.train_module import TrainModule, sample_draws  # noqa: E402


def emit(kind: str, **fields) -> None:
    print(json.dumps({"kind": kind, **fields, "load_avg_1m": round(os.getloadavg()[0], 2)}), flush=True)


def loader_rate(dataset, batch: int, workers: int, batches: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    order = [rng.integers(0, len(dataset), batch).tolist() for _ in range(batches + 2)]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=order, num_workers=workers,
                                         prefetch_factor=4 if workers else None)
    it = iter(loader)
    next(it), next(it)  # worker start-up and first-touch out of the measurement
    started = time.perf_counter()
    count = 0
    for item in it:
        count += len(item["action"])
    return count / (time.perf_counter() - started)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", required=True, help="a store folder of episodes")
    p.add_argument("--max-episodes", type=int, default=5)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--vae-batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--steps", type=int, default=5, help="timed optimisation steps")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    config = get_preset(args.preset)
    canvas, window = CanvasSpec.from_config(config), WindowSpec.from_config(config)
    infos = find_episodes([args.episodes], EpisodeFilter(labels=("success", "failure", "unknown")),
                          config.encoder.tasks[0], canvas.source_cameras)[: args.max_episodes]
    steps_total = sum(i.length for i in infos)

    torch.manual_seed(0)
    vae = CausalVideoAutoencoder(config.video.in_dim, config.encoder.vae_channels).eval()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        canvases, _ = CanvasCache(tmp, canvas).ensure(infos)
        seconds = time.perf_counter() - started
        emit("canvas_build", episodes=len(infos), steps=steps_total, seconds=round(seconds, 2),
             s_per_episode=round(seconds / len(infos), 3), ms_per_step=round(1e3 * seconds / steps_total, 3))
        cache = LatentCache(tmp, encoder_key(vae, canvas, window))
        started = time.perf_counter()
        entries, report = cache.ensure(infos, vae, canvas, window, canvases=canvases)
        seconds = time.perf_counter() - started
        emit("cache_build", episodes=len(infos), steps=steps_total, seconds=round(seconds, 2),
             s_per_episode=round(seconds / len(infos), 3), ms_per_step=round(1e3 * seconds / steps_total, 3),
             threads=args.threads)

        norm = compute_norm_stats([i.path for i in infos])
        latents = WindowDataset([EpisodeSource(i, 0, e) for i, e in zip(infos, entries)], window, norm_stats=norm)
        frames = WindowDataset([EpisodeSource(i, 0, canvases=c) for i, c in zip(infos, canvases)], window, canvas, norm,
                               mode="frames")
        decoded = WindowDataset([EpisodeSource(i, 0) for i in infos], window, canvas, norm, mode="frames")
        rates = {"latents": {}, "frames": {}, "decoded": {}}
        for workers in args.workers:
            rates["latents"][workers] = loader_rate(latents, args.batch_size, workers, args.batches)
            rates["frames"][workers] = loader_rate(frames, args.vae_batch_size, workers, args.batches)
            rates["decoded"][workers] = loader_rate(decoded, args.vae_batch_size, workers, max(4, args.batches // 4))
            for mode in ("latents", "frames", "decoded"):
                emit("loader", mode={"frames": "cached_canvases", "decoded": "decoded_frames"}.get(mode, mode),
                     workers=workers, batch_size=args.batch_size if mode == "latents" else args.vae_batch_size,
                     samples_per_s=round(rates[mode][workers], 1))

        # The DiT step on real cached batches.
        module = TrainModule(FastWAM(config), list(config.encoder.tasks),
                             TaskEmbedding(config.encoder.tasks, config.encoder.tokens_per_task, config.text_dim))
        opt = torch.optim.AdamW(module.parameters(), lr=1e-4, betas=(0.9, 0.95))
        batch = torch.utils.data.default_collate([latents[i] for i in range(args.batch_size)])
        shapes = ((config.video.in_dim, config.latent_frames, *config.latent_hw), (config.action_horizon, config.action_dim))
        times = []
        for step in range(args.steps + 1):
            draws = sample_draws(config, 0, step, range(args.batch_size), *shapes)
            t0 = time.perf_counter()
            losses = module(batch["latents"], batch["proprio"], batch["action"], batch["action_is_pad"],
                            batch["image_is_pad"], batch["task"], **draws)
            opt.zero_grad()
            losses[0].backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            opt.step()
            times.append(time.perf_counter() - t0)
        dit_rate = args.batch_size / float(np.median(times[1:]))
        emit("train_step", stage="dit", preset=args.preset, batch_size=args.batch_size,
             step_s=round(float(np.median(times[1:])), 4), samples_per_s=round(dit_rate, 1), threads=args.threads)

        vae.train()
        vopt = torch.optim.AdamW(vae.parameters(), lr=1e-3)
        clips = torch.stack([frames[i]["video"][:5] for i in range(args.vae_batch_size)])  # as the stage trains
        times = []
        for _ in range(args.steps + 1):
            t0 = time.perf_counter()
            loss = vae.reconstruction_loss(video_to_model(clips))
            vopt.zero_grad()
            loss.backward()
            vopt.step()
            times.append(time.perf_counter() - t0)
        vae_rate = args.vae_batch_size / float(np.median(times[1:]))
        emit("train_step", stage="autoencoder", batch_size=args.vae_batch_size, step_s=round(float(np.median(times[1:])), 4),
             samples_per_s=round(vae_rate, 1), threads=args.threads)
        emit("verdict", dit_loader_over_step=round(max(rates["latents"].values()) / dit_rate, 1),
             autoencoder_loader_over_step=round(max(rates["frames"].values()) / vae_rate, 1),
             autoencoder_decoding_loader_over_step=round(max(rates["decoded"].values()) / vae_rate, 2),
             best_latent_workers=max(rates["latents"], key=rates["latents"].get),
             best_frame_workers=max(rates["frames"], key=rates["frames"].get))
        latents.close()
        frames.close()
        decoded.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
