"""Fixtures for the model tests: the reference vectors folder and small random models.

The reference folder comes from $FASTWAM_REFERENCE_DIR, else ../shared/reference/fastwam-tiny
relative to the repository root; tests that need it skip with the reason when neither exists.
Nothing here assumes the reference's sizes: the config is built from its config.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

# One intra-op thread: the suite's tensors are small, the 2 cores are shared with other jobs,
# and OpenMP workers spinning on a busy core make small ops 100x slower, not faster.
torch.set_num_threads(1)


def reference_dir() -> Path | None:
    env = os.environ.get("FASTWAM_REFERENCE_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(ROOT.parent / "shared" / "reference" / "fastwam-tiny")
    for path in candidates:
        if (path / "config.json").is_file() and (path / "vectors.safetensors").is_file():
            return path
    return None


@pytest.fixture(scope="session")
def reference():
    """(model, config, vectors) from the reference folder, model in eval mode, fp32 on CPU."""
    path = reference_dir()
    if path is None:
        pytest.skip("no reference vectors: set FASTWAM_REFERENCE_DIR or provide ../shared/reference/fastwam-tiny")
    from safetensors.torch import load_file

    from model.checkpoint import load_released_checkpoint
    from model.config import FastWAMConfig

    config = FastWAMConfig.from_reference(json.loads((path / "config.json").read_text()))
    model, _ = load_released_checkpoint(path / "checkpoint.pt", config)
    return model.eval(), config, load_file(str(path / "vectors.safetensors"))


@pytest.fixture(scope="session")
def tiny_model():
    """A random `tiny`-preset model (eval mode). Heads are made non-zero so outputs are informative."""
    from model.config import get_preset
    from model.fastwam import FastWAM

    torch.manual_seed(0)
    model = FastWAM(get_preset("tiny")).eval()
    with torch.no_grad():
        model.video.head.head.weight.normal_(0, 0.02)
    return model


@pytest.fixture(scope="session")
def random_inputs():
    """make(config, batch=1, frames=None, seed=0) -> latents (B, C, F, h, w), context, mask, proprio:
    what the encoders would give (with one padded context position in sample 0)."""
    return _random_inputs


def _random_inputs(config, batch: int = 1, frames: int | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lh, lw = config.latent_hw
    f = frames or config.latent_frames
    latents = torch.randn((batch, config.video.in_dim, f, lh, lw), generator=g)
    ctx = torch.randn((batch, 3, config.text_dim), generator=g)
    mask = torch.ones((batch, 3), dtype=torch.bool)
    mask[0, -1] = False  # a padded context position
    proprio = torch.randn((batch, config.proprio_dim), generator=g)
    return latents, ctx, mask, proprio
