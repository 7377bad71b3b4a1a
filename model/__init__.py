"""Fast-WAM for our bimanual rig: the network, its flow-matching loss and samplers, checkpoints,
encoders and the runtime policy. Only this package imports torch.

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
"""

from model.checkpoint import (
    LoadedCheckpoint,
    NormStats,
    init_action_expert_from_video,
    load_checkpoint,
    load_released_checkpoint,
    load_wan_dit_into_video_expert,
    save_checkpoint,
)
from model.config import PRESETS, FastWAMConfig, get_preset
from model.encoders import (
    CausalVideoAutoencoder,
    PrecomputedTextEmbeddings,
    TaskEmbedding,
    WanVideoEncoder,
    build_encoders,
    make_canvas,
)
from model.errors import (
    CheckpointError,
    CheckpointMismatch,
    MissingCamera,
    MissingDependency,
    ModelError,
    PolicyOutputInvalid,
    UnknownTask,
)
from model.fast_sampler import SinglePassSampler
from model.fastwam import FastWAM, build_attention_mask
from model.flow import inference_schedule, training_loss
from model.policy import FastWAMPolicy, PolicyInput
from model.sampling import sample_actions, sample_actions_nocache, sample_joint

__all__ = [
    "CausalVideoAutoencoder", "CheckpointError", "CheckpointMismatch", "FastWAM", "FastWAMConfig",
    "FastWAMPolicy", "LoadedCheckpoint", "MissingCamera", "MissingDependency", "ModelError", "NormStats",
    "PRESETS", "PolicyInput", "PolicyOutputInvalid", "PrecomputedTextEmbeddings", "SinglePassSampler",
    "TaskEmbedding", "UnknownTask", "WanVideoEncoder", "build_attention_mask", "build_encoders",
    "get_preset", "inference_schedule", "init_action_expert_from_video", "load_checkpoint",
    "load_released_checkpoint", "load_wan_dit_into_video_expert", "make_canvas", "sample_actions",
    "sample_actions_nocache", "sample_joint", "save_checkpoint", "training_loss",
]
