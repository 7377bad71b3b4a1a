"""Checkpoints: the released Fast-WAM payload, our own folder format, and Wan2.2 DiT weights.

- `load_released_checkpoint(path, config)`: the reference `torch.save({"mot", "proprio_encoder",
  "step", "torch_dtype"})` file, loaded with `weights_only=True` and checked key for key.
- `save_checkpoint(dir, model, config, norm_stats, step, extra_modules, inputs)` / `load_checkpoint(dir)`:
  a folder with `model.safetensors`, `config.json`, `normalization.json`, `step.json` and (from
  training) `inputs.json`, the inputs it was trained on (`model.compatibility.PolicyInputs`).
- `load_wan_dit_into_video_expert(model, state_dict)`: Wan2.2-TI2V-5B DiT weights (original or
  diffusers `WanTransformer3DModel` names) into the video expert for a fresh fine-tune, then
  `init_action_expert_from_video(model)`: the action expert by the interpolation rule.

- `read_tensors(path)`: a safetensors file with errors naming it. What a resume of a training
  run can use is `model.resume`.

Nothing here unpickles arbitrary objects: torch files are read with `weights_only=True`,
everything we write is safetensors or JSON. A file that cannot be read is a `CheckpointError`
naming the file and the fault; torch's own advice to load with `weights_only=False` (which
would run whatever a poisoned file holds) is never passed on.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from model.config import FastWAMConfig
from model.errors import CheckpointError, CheckpointMismatch
from model.fastwam import FastWAM
from model.run_folder import CONFIG_FILE, INPUTS_FILE, MODEL_FILE, NORM_FILE, STEP_FILE

# ------------------------------------------------------------------------------------------------
# Normalisation statistics
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NormStats:
    """Z-score statistics of the training data (float32 arrays of shape (14,)).

    std is floored at `std_floor` when used, so a joint that never moved in the demonstrations
    (std ~ 0) cannot turn sensor noise into huge normalised values.
    """

    qpos_mean: np.ndarray
    qpos_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray
    std_floor: float = 1e-3

    def normalize_qpos(self, qpos: np.ndarray) -> np.ndarray:
        return (np.asarray(qpos, np.float32) - self.qpos_mean) / np.maximum(self.qpos_std, self.std_floor)

    def normalize_action(self, action: np.ndarray) -> np.ndarray:
        return (np.asarray(action, np.float32) - self.action_mean) / np.maximum(self.action_std, self.std_floor)

    def denormalize_action(self, action: np.ndarray) -> np.ndarray:
        return np.asarray(action, np.float32) * np.maximum(self.action_std, self.std_floor) + self.action_mean

    def to_dict(self) -> dict:
        return {
            "qpos_mean": self.qpos_mean.tolist(),
            "qpos_std": self.qpos_std.tolist(),
            "action_mean": self.action_mean.tolist(),
            "action_std": self.action_std.tolist(),
            "std_floor": self.std_floor,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "NormStats":
        arrays = {k: np.asarray(data[k], dtype=np.float32) for k in ("qpos_mean", "qpos_std", "action_mean", "action_std")}
        return cls(**arrays, std_floor=float(data.get("std_floor", 1e-3)))

    @classmethod
    def identity(cls, dim: int = 14) -> "NormStats":
        """Mean 0, std 1: for tests and for models trained on raw values."""
        zeros, ones = np.zeros(dim, np.float32), np.ones(dim, np.float32)
        return cls(zeros, ones, zeros.copy(), ones.copy())

    @classmethod
    def from_data(cls, qpos: np.ndarray, action: np.ndarray) -> "NormStats":
        """From (N, 14) arrays of every state and action in the training set."""
        return cls(qpos.mean(0).astype(np.float32), qpos.std(0).astype(np.float32),
                   action.mean(0).astype(np.float32), action.std(0).astype(np.float32))


# ------------------------------------------------------------------------------------------------
# Shared checks
# ------------------------------------------------------------------------------------------------


def check_state_dict(path, expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise `CheckpointMismatch` naming every missing/unexpected/misshapen tensor."""
    missing = set(expected) - set(found)
    unexpected = set(found) - set(expected)
    shapes = [
        (k, tuple(found[k].shape), tuple(expected[k].shape))
        for k in set(expected) & set(found)
        if tuple(found[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shapes:
        raise CheckpointMismatch(path, missing, unexpected, shapes, what=what)


def _torch_reason(error: BaseException) -> str:
    """torch's message, short, without its advice to load with weights_only=False."""
    sentences = re.split(r"(?<=[.!?])\s+|\n+", str(error))
    kept = [s for s in sentences if s.strip() and "weights_only" not in s and "WeightsUnpickler" not in s]
    text = " ".join(" ".join(kept).split())
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def torch_load_tensors(path: Path, fix: str = "Download or copy it again."):
    """A torch file with `weights_only=True`; CheckpointError naming the file and the fault."""
    if not path.is_file():
        raise CheckpointError(path, "no such file", "Check the path.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(
            path, f"the file is truncated or not a torch checkpoint ({_torch_reason(exc)})", fix
        ) from exc
    except Exception as exc:  # pickle.UnpicklingError for payloads holding arbitrary objects
        raise CheckpointError(
            path,
            f"it holds objects other than tensors ({type(exc).__name__}), which are never unpickled: the file "
            "is damaged or was not written by this studio (it could run code if it were loaded)",
            f"{fix} Only plain tensor payloads load.",
        ) from exc


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A safetensors file; CheckpointError naming the file when it is missing or damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such file", "The save was interrupted: use an earlier checkpoint.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(path, f"the file is truncated or corrupt ({str(exc)[:200]})",
                              "Use an earlier checkpoint or copy it again.") from exc


def _load_into(model: nn.Module, state: Mapping[str, torch.Tensor], path, what: str) -> None:
    check_state_dict(path, model.state_dict(), state, what)
    meta = next(iter(model.parameters())).is_meta
    model.load_state_dict(dict(state), strict=True, assign=meta)


# ------------------------------------------------------------------------------------------------
# The released payload
# ------------------------------------------------------------------------------------------------


def released_state_dict(payload: Mapping) -> dict[str, torch.Tensor]:
    """Flatten {"mot": ..., "proprio_encoder": ...} into our `FastWAM.state_dict()` names."""
    state = {f"mot.{k}": v for k, v in payload["mot"].items()}
    state.update({f"proprio_encoder.{k}": v for k, v in payload.get("proprio_encoder", {}).items()})
    return state


def load_released_checkpoint(path, config: FastWAMConfig, device=None, dtype=None) -> tuple[FastWAM, int]:
    """The reference training checkpoint -> (model, step). Every tensor must match by name and shape."""
    path = Path(path)
    payload = torch_load_tensors(path)
    if not isinstance(payload, Mapping) or "mot" not in payload:
        keys = sorted(payload)[:10] if isinstance(payload, Mapping) else type(payload).__name__
        raise CheckpointError(path, f"it has no 'mot' entry (found {keys})",
                              "Pass the Fast-WAM training checkpoint (payload keys mot, proprio_encoder, step).")
    with torch.device("meta"):
        model = FastWAM(config)
    _load_into(model, released_state_dict(payload), path, f"a {config.name} Fast-WAM")
    model._rope_cache.clear()
    model = model.to(device=device or "cpu", dtype=dtype)
    return model, int(payload.get("step") or 0)


# ------------------------------------------------------------------------------------------------
# Our folder format
# ------------------------------------------------------------------------------------------------


@dataclass
class LoadedCheckpoint:
    model: FastWAM
    config: FastWAMConfig
    norm_stats: NormStats
    step: int
    extra_state: dict[str, dict[str, torch.Tensor]]  # e.g. {"vae": ..., "task_embedding": ...}


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    directory,
    model: FastWAM,
    config: FastWAMConfig,
    norm_stats: NormStats,
    step: int,
    extra_modules: Mapping[str, nn.Module] | None = None,
    inputs: Mapping | None = None,
) -> Path:
    """Write `model.safetensors` (FastWAM tensors plus `<name>.*` for each extra module, e.g. the
    tiny VAE and the task embedding), `config.json`, `normalization.json`, `step.json`, and
    `inputs.json` when `inputs` (`PolicyInputs.to_dict()`: cameras, image sizes, widths, tasks)
    is given.

    Each file is written under a temporary name and renamed, so a reader never sees half a file.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    for name, module in (extra_modules or {}).items():
        for k, v in module.state_dict().items():
            tensors[f"{name}.{k}"] = v.detach().contiguous().cpu()
    _atomic_write(directory / MODEL_FILE, lambda p: save_file(tensors, p, metadata={"format": "fastwam-studio/1"}))
    for name, data in ((CONFIG_FILE, config.to_dict()), (NORM_FILE, norm_stats.to_dict()), (STEP_FILE, {"step": int(step)})):
        _atomic_write(directory / name, lambda p, d=data: Path(p).write_text(json.dumps(d, indent=1)))
    if inputs is not None:
        _atomic_write(directory / INPUTS_FILE, lambda p: Path(p).write_text(json.dumps(dict(inputs), indent=1)))
    return directory


def load_config(directory) -> FastWAMConfig:
    """A checkpoint's config.json, checked against the size limits before anything is built."""
    path = Path(directory) / CONFIG_FILE
    try:
        return FastWAMConfig.from_dict(json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise CheckpointError(directory, f"there is no {CONFIG_FILE}",
                              "Point to a folder written by save_checkpoint (model.safetensors + config.json).") from exc
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(path, f"the config is invalid ({exc})", "Restore config.json from the training run.") from exc
    except OSError as exc:
        raise CheckpointError(path, f"it cannot be read ({exc.strerror or exc})", "Check the file's permissions.") from exc


def read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(path, f"the {what} is damaged ({exc})", "Use an earlier checkpoint.") from exc
    if not isinstance(data, dict):
        raise CheckpointError(path, f"the {what} is not a JSON object", "Use an earlier checkpoint.")
    return data


def load_checkpoint(directory, device=None, dtype=None) -> LoadedCheckpoint:
    """Inverse of `save_checkpoint`. The model is built on the meta device and filled from the
    file (no second copy in memory); extra modules' tensors are returned by prefix."""
    directory = Path(directory)
    config = load_config(directory)
    weights = directory / MODEL_FILE
    if not weights.is_file():
        raise CheckpointError(directory, f"there is no {MODEL_FILE}", "The save was interrupted: use an earlier checkpoint.")
    tensors = read_tensors(weights)
    with torch.device("meta"):
        model = FastWAM(config)
    own = set(model.state_dict())
    extra: dict[str, dict[str, torch.Tensor]] = {}
    for key in list(tensors):
        if key not in own and key.split(".", 1)[0] not in ("mot", "proprio_encoder"):
            prefix, rest = key.split(".", 1)
            extra.setdefault(prefix, {})[rest] = tensors.pop(key)
    _load_into(model, tensors, weights, f"a {config.name} Fast-WAM")
    model._rope_cache.clear()
    model = model.to(device=device or "cpu", dtype=dtype)
    try:
        norm = NormStats.from_dict(read_json(directory / NORM_FILE, "normalisation statistics"))
    except FileNotFoundError as exc:
        raise CheckpointError(directory, f"there is no {NORM_FILE}",
                              "The policy needs the training data's statistics; save them with save_checkpoint.") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(directory / NORM_FILE, f"the normalisation statistics are incomplete ({exc})",
                              "Use an earlier checkpoint.") from exc
    step_path = directory / STEP_FILE
    try:
        step = int(read_json(step_path, "step file")["step"]) if step_path.is_file() else 0
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(step_path, f"the step file is damaged ({exc})", "Use an earlier checkpoint.") from exc
    return LoadedCheckpoint(model, config, norm, step, extra)


# ------------------------------------------------------------------------------------------------
# Wan2.2 DiT weights -> video expert, and the action expert's interpolated initialisation
# ------------------------------------------------------------------------------------------------

# diffusers `WanTransformer3DModel` name -> original Wan name (= ours), per dotted segment group.
# Checked against diffusers' scripts/convert_wan_to_diffusers.py (TRANSFORMER_KEYS_RENAME_DICT):
# diffusers renames the original norm3 (affine, before cross-attn) to norm2 and vice versa.
_DIFFUSERS_TO_WAN = [
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^scale_shift_table$", "head.modulation"),
    (r"^proj_out\.", "head.head."),
    (r"^(blocks\.\d+)\.scale_shift_table$", r"\1.modulation"),
    (r"^(blocks\.\d+)\.attn1\.to_out\.0\.", r"\1.self_attn.o."),
    (r"^(blocks\.\d+)\.attn1\.to_([qkv])\.", r"\1.self_attn.\2."),
    (r"^(blocks\.\d+)\.attn1\.norm_([qk])\.", r"\1.self_attn.norm_\2."),
    (r"^(blocks\.\d+)\.attn2\.to_out\.0\.", r"\1.cross_attn.o."),
    (r"^(blocks\.\d+)\.attn2\.to_([qkv])\.", r"\1.cross_attn.\2."),
    (r"^(blocks\.\d+)\.attn2\.norm_([qk])\.", r"\1.cross_attn.norm_\2."),
    (r"^(blocks\.\d+)\.ffn\.net\.0\.proj\.", r"\1.ffn.0."),
    (r"^(blocks\.\d+)\.ffn\.net\.2\.", r"\1.ffn.2."),
    (r"^(blocks\.\d+)\.norm2\.", r"\1.norm3."),
]


def wan_dit_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept original Wan names (`blocks.0.self_attn.q.weight`; an optional `model.` prefix is
    stripped) or diffusers names (`blocks.0.attn1.to_q.weight`) and return original names."""
    out = {}
    diffusers = any(".attn1." in k or k.startswith("condition_embedder.") for k in state)
    for key, value in state.items():
        name = key[len("model."):] if key.startswith("model.") else key
        if diffusers:
            for pattern, repl in _DIFFUSERS_TO_WAN:
                new, n = re.subn(pattern, repl, name)
                if n:
                    name = new
                    break
        out[name] = value
    return out


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """A safetensors file, a torch file (weights_only), or a folder of `*.safetensors` shards."""
    path = Path(path)
    if path.is_dir():
        shards = sorted(path.glob("*.safetensors"))
        if not shards:
            raise CheckpointError(path, "the folder has no *.safetensors files", "Point to the folder holding the DiT shards.")
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(read_tensors(shard))
        return state
    if path.suffix == ".safetensors":
        return read_tensors(path)
    payload = torch_load_tensors(path)
    if isinstance(payload, Mapping) and "state_dict" in payload:
        payload = payload["state_dict"]
    return dict(payload)


def load_wan_dit_into_video_expert(model: FastWAM, source, init_action: bool = True) -> None:
    """Load Wan2.2-TI2V-5B DiT weights (a state dict or a path; original or diffusers names) into
    the video expert, then (by default) initialise the action expert from it.

    Every video-expert tensor must be present with the right shape; extra tensors in the source
    (none are expected for TI2V-5B) are an error too, so a wrong file cannot load half-way.
    """
    path = source if not isinstance(source, Mapping) else "<state dict>"
    state = wan_dit_names(read_state_dict(source) if not isinstance(source, Mapping) else source)
    video = model.video
    _load_into(video, {k: v.to(next(video.parameters()).dtype) for k, v in state.items()}, path,
               "the Fast-WAM video expert (Wan2.2-TI2V-5B DiT layout)")
    if init_action:
        init_action_expert_from_video(model)


def interpolate_to_shape(src: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Linearly interpolate every mismatched dim of `src` (align corners: end points kept), one
    dim after another; a 2-D+ tensor whose last (input) dim shrinks is scaled by
    sqrt(d_src / d_tgt) so a Linear's output keeps its scale on the narrower input."""
    if src.ndim != len(shape):
        raise ValueError(f"cannot interpolate {tuple(src.shape)} to {shape}: different rank")
    out = src.float()
    for dim, size in enumerate(shape):
        if out.shape[dim] == size:
            continue
        moved = out.movedim(dim, -1)
        flat = moved.reshape(-1, 1, moved.shape[-1])
        flat = F.interpolate(flat, size=size, mode="linear", align_corners=True)
        out = flat.reshape(*moved.shape[:-1], size).movedim(-1, dim)
    if src.ndim >= 2 and src.shape[-1] > shape[-1]:
        out = out * (src.shape[-1] / shape[-1]) ** 0.5
    return out.to(src.dtype)


#: Action-expert tensors that stay random: they depend on the action dimension, not on video.
ACTION_RANDOM_PREFIXES = ("action_encoder.", "head.")


@torch.no_grad()
def init_action_expert_from_video(model: FastWAM) -> list[str]:
    """Initialise the action expert's backbone (text/time embeddings, blocks) from the video
    expert by `interpolate_to_shape`; the action encoder and head keep their random init.
    Returns the names that were interpolated (the rest were copied as is)."""
    video_state = model.video.state_dict()
    interpolated = []
    for name, param in model.action.state_dict().items():
        if name.startswith(ACTION_RANDOM_PREFIXES):
            continue
        src = video_state[name]
        if tuple(src.shape) != tuple(param.shape):
            interpolated.append(name)
            value = interpolate_to_shape(src, tuple(param.shape))
        else:
            value = src
        param.copy_(value.to(param.dtype))
    return interpolated
