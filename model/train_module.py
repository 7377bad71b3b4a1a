"""What one training step computes, as DDP/FSDP and the data loader see it: `TrainModule` (the
network plus the trainable text side, returning the three losses), `sample_draws` (each sample's
noise and timesteps, a function of (seed, step, position in the global batch)) and `StepBatches`
(the index lists of each step for this rank, a function of (seed, step)). Together they make a
resumed or multi-process run see exactly the batches and noise of an uninterrupted single one.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch
import torch.nn as nn

from model.config import FastWAMConfig
from model.data import SampleStream
from model.distributed import DistContext
from model.encoders import PrecomputedTextEmbeddings, TaskEmbedding
from model.fastwam import FastWAM
from model.flow import shifted_sigma, training_loss


class TrainModule(nn.Module):
    """The network plus the trainable text side; forward returns the losses (total, video, action).

    text: a learned `TaskEmbedding` (tiny/small, trained) or precomputed umT5 contexts (frozen,
    held as buffers indexed by task).
    """

    def __init__(self, fastwam: FastWAM, tasks: Sequence[str], text: TaskEmbedding | PrecomputedTextEmbeddings):
        super().__init__()
        self.fastwam = fastwam
        self.tasks = list(tasks)
        if isinstance(text, TaskEmbedding):
            self.task_embedding = text
        else:
            self.task_embedding = None
            ctx, mask = text(self.tasks)
            self.register_buffer("context_table", ctx, persistent=False)  # (n_tasks, L, text_dim)
            self.register_buffer("context_mask", mask, persistent=False)  # (n_tasks, L)

    def context(self, task: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """task (B,) int64 -> context (B, L, text_dim), mask (B, L)."""
        if self.task_embedding is not None:
            return self.task_embedding([self.tasks[i] for i in task.tolist()])
        return self.context_table[task], self.context_mask[task]

    def forward(self, latents, proprio, action, action_is_pad, image_is_pad, task, noise_video, noise_action,
                t_video, t_action) -> torch.Tensor:
        ctx, mask = self.context(task)
        out = training_loss(self.fastwam, latents, ctx, mask, proprio, action, action_is_pad=action_is_pad,
                            image_is_pad=image_is_pad, noise_video=noise_video, noise_action=noise_action,
                            t_video=t_video, t_action=t_action)
        return torch.stack([out.total, out.video.to(out.total.dtype), out.action])


def sample_draws(config: FastWAMConfig, seed: int, step: int, positions: Sequence[int],
                 latent_shape: tuple[int, ...], action_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Noise and timesteps of the samples at `positions` of the global batch of `step`: each from
    its own generator seeded by (seed, step, position), so they do not depend on how the batch
    is split over processes or where a run was resumed."""
    nv, na, tv, ta = [], [], [], []
    for pos in positions:
        digest = hashlib.sha256(f"{seed}:{step}:{pos}".encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
        u = torch.rand(2, generator=g)
        nv.append(torch.randn(latent_shape, generator=g))
        na.append(torch.randn(action_shape, generator=g))
        tv.append(u[0])
        ta.append(u[1])
    scale = float(config.num_train_timesteps)
    return {
        "noise_video": torch.stack(nv), "noise_action": torch.stack(na),
        "t_video": shifted_sigma(torch.stack(tv), config.shift) * scale,
        "t_action": shifted_sigma(torch.stack(ta), config.shift) * scale,
    }


class StepBatches(torch.utils.data.Sampler):
    """Batch sampler: the index lists of steps [start, stop) for this rank (see SampleStream)."""

    def __init__(self, stream: SampleStream, start: int, stop: int, global_batch: int, ctx: DistContext):
        self.stream, self.start, self.stop, self.global_batch, self.ctx = stream, start, stop, global_batch, ctx

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.stream.batch(step, self.global_batch, self.ctx.rank, self.ctx.world_size).tolist()

    def __len__(self) -> int:
        return max(0, self.stop - self.start)
