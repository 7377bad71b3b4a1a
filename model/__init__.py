"""Fast-WAM for our bimanual rig: the network, its flow-matching loss and samplers, checkpoints,
encoders, training and the runtime policy. Only this package imports torch.

Public API (see each module's docstring):
- config:      FastWAMConfig, PRESETS, get_preset
- fastwam:     FastWAM (the network), build_attention_mask
- flow:        training_loss, inference_schedule, sample_timesteps, loss_weight
- sampling:    sample_actions (single-pass), sample_actions_nocache, sample_joint (imagination)
- fast_sampler: SinglePassSampler (fused CPU / compiled + CUDA-graph GPU action steps)
- checkpoint:  save_checkpoint, load_checkpoint, load_released_checkpoint, NormStats,
               load_wan_dit_into_video_expert, init_action_expert_from_video
- encoders:    make_canvas, CausalVideoAutoencoder, WanVideoEncoder, TaskEmbedding,
               PrecomputedTextEmbeddings, build_encoders
- policy:      FastWAMPolicy, PolicyInput
- errors:      CheckpointError, CheckpointMismatch, MissingDependency, UnknownTask,
               MissingCamera, PolicyOutputInvalid
Training (`python run.py train` is `app.studio.jobs.train`):
- run_folder:  the on-disk layout of a training run (torch-free; the app reads runs through it)
- train_options: TrainOptions, TrainHyper, TRAIN_PRESETS, `--set` overrides (torch-free)
- trainer:     Trainer (the stages and the loop); train_module: TrainModule, sample_draws
- autoencoder_stage: pretraining, saving and loading the tiny/small video autoencoder

Names are importable from the package too (`from model import FastWAM`); they load on first use,
so `import model` and the torch-free modules (config, errors, run_folder, train_options) do not
import torch: the window and the command line's argument parsing stay quick.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LoadedCheckpoint": "model.checkpoint",
    "NormStats": "model.checkpoint",
    "init_action_expert_from_video": "model.checkpoint",
    "load_checkpoint": "model.checkpoint",
    "load_released_checkpoint": "model.checkpoint",
    "load_wan_dit_into_video_expert": "model.checkpoint",
    "save_checkpoint": "model.checkpoint",
    "PRESETS": "model.config",
    "FastWAMConfig": "model.config",
    "get_preset": "model.config",
    "CausalVideoAutoencoder": "model.encoders",
    "PrecomputedTextEmbeddings": "model.encoders",
    "TaskEmbedding": "model.encoders",
    "WanVideoEncoder": "model.encoders",
    "build_encoders": "model.encoders",
    "make_canvas": "model.encoders",
    "CheckpointError": "model.errors",
    "CheckpointMismatch": "model.errors",
    "MissingCamera": "model.errors",
    "MissingDependency": "model.errors",
    "ModelError": "model.errors",
    "PolicyOutputInvalid": "model.errors",
    "UnknownTask": "model.errors",
    "SinglePassSampler": "model.fast_sampler",
    "FastWAM": "model.fastwam",
    "build_attention_mask": "model.fastwam",
    "inference_schedule": "model.flow",
    "training_loss": "model.flow",
    "FastWAMPolicy": "model.policy",
    "PolicyInput": "model.policy",
    "sample_actions": "model.sampling",
    "sample_actions_nocache": "model.sampling",
    "sample_joint": "model.sampling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
