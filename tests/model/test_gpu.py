"""GPU path: compiled, CUDA-graphed action steps equal the readable sampler (skipped without CUDA),
and the same code runs on the CPU through the benchmark's smoke path."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from model.config import get_preset
from model.fast_sampler import SinglePassSampler
from model.fastwam import FastWAM
from model.sampling import sample_actions

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_gpu_path_runs_on_cpu(capsys):
    spec = importlib.util.spec_from_file_location("bench_inference", ROOT / "benchmarks" / "inference.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.bench_gpu_path("tiny", torch.device("cpu"), torch.float32, iters=1, compile=False, cuda_graphs=False, warmup=0)
    assert '"mode": "single_pass_gpu_kernels"' in capsys.readouterr().out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_sampler_matches_reference_sampler():
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    model = FastWAM(cfg).cuda().eval()
    lh, lw = cfg.latent_hw
    latent = torch.randn((1, cfg.video.in_dim, 1, lh, lw), device="cuda")
    ctx, mask = torch.randn((1, 2, cfg.text_dim), device="cuda"), torch.ones((1, 2), dtype=torch.bool, device="cuda")
    proprio = torch.randn((1, cfg.proprio_dim), device="cuda")
    noise = torch.randn((1, cfg.action_horizon, cfg.action_dim), device="cuda")
    expected = sample_actions(model, latent, ctx, mask, proprio, noise=noise)
    sampler = SinglePassSampler(model, compile=True, cuda_graphs=True)
    for _ in range(2):  # capture, then replay
        got = sampler(latent, ctx, mask, proprio, noise=noise)
        torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-3)
