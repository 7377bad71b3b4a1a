"""The runtime policy: observation in, a chunk of 14-D actions out.

`FastWAMPolicy.from_checkpoint(dir)` loads our checkpoint folder; `predict_chunk(observation)`
builds the canvas, encodes the current frame, embeds the task, normalises the state, samples a
chunk (single-pass, or Joint imagination for the Joint variant) and returns de-normalised actions
(H, 14) float32 - or raises `PolicyOutputInvalid` rather than return NaN/inf.

Threading: a policy object belongs to one thread (the policy thread of the control loop); it keeps
no per-episode state besides its noise generator, which `reset()` re-seeds. On a small shared CPU
(the 2-core lab machine) call `torch.set_num_threads(1)` in the process: measured there, a second
OpenMP thread spinning on a core the control loop needs makes inference slower, not faster.

The observation is duck-typed: anything with `.qpos` (14,) and `.images` {camera: (H, W, 3) uint8},
and optionally `.task` (str) - `robot.types.Observation` qualifies, as does `PolicyInput`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np
import torch

from model.checkpoint import NormStats, load_checkpoint
from model.compatibility import read_policy_inputs
from model.config import FastWAMConfig
from model.encoders import (
    CausalVideoAutoencoder,
    PrecomputedTextEmbeddings,
    TaskEmbedding,
    WanVideoEncoder,
    canvas_to_tensor,
    make_canvas,
)
from model.errors import MissingCamera, ModelError, PolicyOutputInvalid
from model.fast_sampler import SinglePassSampler
from model.fastwam import FastWAM
from model.rtc import sample_actions_guided
from model.sampling import sample_joint

if TYPE_CHECKING:
    from model.execution import Guide

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PolicyInput:
    """The minimum a policy needs: joint positions (14,) (rad, grippers 0..1), camera images
    {name: (H, W, 3) uint8 RGB} and the task string."""

    qpos: np.ndarray
    images: Mapping[str, np.ndarray] = field(default_factory=dict)
    task: str = ""


@dataclass(frozen=True)
class PolicyChunk:
    """One predicted chunk: actions (H, 14) float32 in robot units, and where the time went
    (seconds): encode_s = canvas, VAE, context and the video expert's pass; action_s = the action
    expert's steps; total_s = both (host wall time, CUDA work included)."""

    actions: np.ndarray
    encode_s: float
    action_s: float
    total_s: float


def default_device_dtype(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """cuda + bfloat16 when a GPU is present, else cpu + float32 (bf16 matmuls are slow on CPU)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return device, dtype


class FastWAMPolicy:
    """Fast-WAM as an action-chunk source for the control loop.

    camera_map: canvas view -> the observation camera that fills it (from the checkpoint's
    inputs.json: a policy trained through `--camera-map cam_high=top ...` reads `top`); a view it
    leaves out reads the camera of its own name. Check a rig with `model.compatibility` first,
    which also gives the map to use under the expert override (`Compatibility.camera_feeds`)."""

    def __init__(
        self,
        model: FastWAM,
        norm_stats: NormStats,
        video_encoder: torch.nn.Module,
        text_encoder,
        seed: int = 0,
        compile: bool = False,
        camera_map: Mapping[str, str] | None = None,
    ):
        self.model = model.eval().requires_grad_(False)
        self.config: FastWAMConfig = model.config
        self.norm_stats = norm_stats
        self.video_encoder = video_encoder
        self.text_encoder = text_encoder
        self.device, self.dtype = model.device, model.dtype
        self.seed = seed
        self.camera_map = dict(camera_map or {})
        cuda = self.device.type == "cuda"
        self.sampler = SinglePassSampler(model, compile=compile and cuda, cuda_graphs=compile and cuda)
        self._context_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.reset()

    @classmethod
    def from_checkpoint(
        cls,
        directory,
        device=None,
        dtype=None,
        wan_vae_dir=None,
        text_embeddings=None,
        seed: int = 0,
        compile: bool = False,
    ) -> "FastWAMPolicy":
        """Load a checkpoint folder written by `model.checkpoint.save_checkpoint`.

        device/dtype: default cuda + bf16 if available, else cpu + fp32. For the 5B preset, also
        pass `wan_vae_dir` (local Wan2.2 folder) and `text_embeddings` (umT5 safetensors file).
        compile: on CUDA, torch.compile + CUDA graphs for the action steps (first chunk is slow).
        """
        device, dtype = default_device_dtype(device, dtype)
        loaded = load_checkpoint(directory, device=device, dtype=dtype)
        cfg = loaded.config
        if cfg.encoder.vae == "causal_conv":
            vae = CausalVideoAutoencoder(cfg.video.in_dim, cfg.encoder.vae_channels)
            _load_extra(vae, loaded.extra_state, "vae", directory)
            video_encoder = vae.to(device=device, dtype=dtype).eval()
        else:
            if wan_vae_dir is None:
                raise ModelError("the fastwam-5b preset encodes frames with the Wan2.2 VAE: pass wan_vae_dir= "
                                 "(the local Wan2.2-TI2V-5B folder)")
            video_encoder = WanVideoEncoder.from_pretrained(wan_vae_dir, device=device, dtype=dtype)
        if cfg.encoder.text == "learned":
            text = TaskEmbedding(cfg.encoder.tasks, cfg.encoder.tokens_per_task, cfg.text_dim)
            _load_extra(text, loaded.extra_state, "task_embedding", directory)
            text_encoder = text.to(device=device, dtype=dtype).eval()
        else:
            if text_embeddings is None:
                raise ModelError("this model reads precomputed umT5 task embeddings: pass text_embeddings= "
                                 "(a safetensors file, see model.encoders.PrecomputedTextEmbeddings)")
            text_encoder = PrecomputedTextEmbeddings.load(text_embeddings)
        log.info("loaded %s (%s, step %d) on %s/%s", directory, cfg.name, loaded.step, device, dtype)
        return cls(loaded.model, loaded.norm_stats, video_encoder, text_encoder, seed=seed, compile=compile,
                   camera_map=read_policy_inputs(directory).camera_map)

    def reset(self) -> None:
        """Start of an episode: re-seed the sampling noise so an episode replays identically."""
        self.generator = torch.Generator(device="cpu").manual_seed(self.seed)

    # -- pieces ---------------------------------------------------------------------------------
    def _task(self, observation, task: str | None) -> str:
        task = task or getattr(observation, "task", "") or ""
        if not task:
            known = list(self.config.encoder.tasks)
            if len(known) == 1:
                return known[0]  # a single-task model needs no task string
            raise ModelError("no task string: pass predict_chunk(observation, task=...) or set observation.task")
        return task

    def _context(self, task: str) -> tuple[torch.Tensor, torch.Tensor]:
        if task not in self._context_cache:
            with torch.no_grad():
                if isinstance(self.text_encoder, PrecomputedTextEmbeddings):
                    ctx, mask = self.text_encoder([task], device=self.device, dtype=self.dtype)
                    # One sample: dropping padded positions is exact and lets attention skip the mask.
                    ctx, mask = ctx[:, mask[0]], mask[:, mask[0]]
                else:
                    ctx, mask = self.text_encoder([task])
            self._context_cache[task] = (ctx.to(self.dtype), mask)
        return self._context_cache[task]

    def encode_observation(self, observation) -> torch.Tensor:
        """Current canvas -> normalised first-frame latent (1, C, 1, h, w)."""
        canvas = make_canvas(self.view_images(observation.images), self.config.canvas_hw, self.config.camera_names)
        video = canvas_to_tensor(canvas, device=self.device, dtype=self.dtype)  # (1, 3, 1, H, W)
        with torch.no_grad():
            return self.video_encoder.encode(video).to(self.dtype)

    def view_images(self, images: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{view: image} of the canvas from the observation's {camera: image}, through `camera_map`."""
        sources = {view: self.camera_map.get(view, view) for view in self.config.camera_names}
        missing = [camera for camera in dict.fromkeys(sources.values()) if camera not in images]
        if missing:
            raise MissingCamera(missing, list(images))
        return {view: images[camera] for view, camera in sources.items()}

    # -- the call -------------------------------------------------------------------------------
    def predict_chunk(self, observation, task: str | None = None) -> np.ndarray:
        """observation (.qpos (14,), .images, optional .task) -> actions (action_horizon, 14)
        float32 in the robot's units. Raises `PolicyOutputInvalid` on NaN/inf output."""
        return self.predict(observation, task).actions

    def predict(self, observation, task: str | None = None, guide: "Guide | None" = None) -> PolicyChunk:
        """Like `predict_chunk`, with the time each stage took; `guide` (real-time chunking,
        `model.execution.Guide`) in-paints the chunk towards the plan it replaces (`model.rtc`)."""
        started = time.perf_counter()
        qpos = np.asarray(observation.qpos, dtype=np.float32)
        if qpos.shape != (self.config.proprio_dim,):
            raise ValueError(f"observation.qpos must have shape ({self.config.proprio_dim},), got {qpos.shape}")
        if not np.all(np.isfinite(qpos)):
            raise ValueError(f"observation.qpos has non-finite entries: {qpos}")
        if guide is not None and self.config.variant == "joint":
            raise ModelError("real-time chunking guides the single-pass sampler; this checkpoint is the Joint "
                             "variant (it imagines video while sampling): use --strategy plain or ensemble")
        with torch.no_grad():
            latent = self.encode_observation(observation)
            ctx, mask = self._context(self._task(observation, task))
            proprio = torch.from_numpy(self.norm_stats.normalize_qpos(qpos))[None].to(self.device, self.dtype)
        noise = torch.randn((1, self.config.action_horizon, self.config.action_dim), generator=self.generator)
        if guide is not None:
            encode_s = self._elapsed(started)
            prefix = torch.from_numpy(self.norm_stats.normalize_action(guide.prefix))[None]
            actions, video_s = sample_actions_guided(
                self.model, latent, ctx, mask, proprio, prefix, torch.from_numpy(guide.weights),
                guide.max_guidance, noise)
            encode_s += video_s
        elif self.config.variant == "joint":
            encode_s = self._elapsed(started)
            with torch.no_grad():
                actions, _ = sample_joint(self.model, latent, ctx, mask, proprio, noise=noise, generator=self.generator)
        else:
            prefilled = self.sampler.prefill(latent, ctx, mask, proprio)
            encode_s = self._elapsed(started)
            actions = self.sampler.denoise(prefilled, noise=noise)
        out = self.norm_stats.denormalize_action(actions[0].float().cpu().numpy())
        total_s = time.perf_counter() - started
        finite = np.isfinite(out).all(axis=1)
        if not finite.all():
            raise PolicyOutputInvalid(np.flatnonzero(~finite).tolist())
        return PolicyChunk(out.astype(np.float32), encode_s, total_s - encode_s, total_s)

    def _elapsed(self, started: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # kernels run ahead of the host: wait to time them
        return time.perf_counter() - started


def _load_extra(module: torch.nn.Module, extra: dict, prefix: str, directory) -> None:
    from model.checkpoint import check_state_dict

    state = extra.get(prefix, {})
    check_state_dict(Path(directory), module.state_dict(), state, f"the {prefix} of this preset")
    module.load_state_dict(state)
