"""Fast-WAM inference latency: single-pass (video once + cached action steps) vs Joint
(test-time imagination: future video denoised with the actions, full pass every step), and
real-time chunking's guided single pass (`model.rtc`).

Prints one JSON line per measurement:
  {"bench": "inference", "preset": ..., "device": ..., "dtype": ..., "mode": "single_pass" | "joint" |
   "rtc_guided" | "policy_end_to_end" | "single_pass_cuda_graphs", "steps": 10, "p50_ms": ..., "p95_ms": ...,
   "cpu_p50_ms": ..., "iters": ..., "peak_mem_mb": ...}
and per preset a summary {"mode": "ratio", "joint_over_single_p50": ..., "joint_over_single_cpu_p50": ...,
"rtc_over_single_p50": ..., "rtc_over_single_cpu_p50": ...}.
(cpu_p50_ms: this process's CPU time per call - robust to other jobs sharing the cores when the
run uses one thread.)

Usage:
  python benchmarks/inference.py                    # CPU: tiny and small; CUDA: also fastwam-5b
  python benchmarks/inference.py --preset tiny --iters 50 --threads 2
  python benchmarks/inference.py --smoke            # seconds: every code path once (used by tests)

Targets: joint/single >= 8x; tiny single-pass p50 <= 20 ms on the 2-core CPU. Model-level
timings start from the current frame's latent and the task context (the VAE is timed in the
end-to-end policy line). Weights are random: latency does not depend on their values.
On CUDA the 5B line uses bf16, SDPA flash kernels, torch.compile and one CUDA graph for all
action steps (`SinglePassSampler(compile=True, cuda_graphs=True)`).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.config import get_preset  # noqa: E402
from model.fast_sampler import SinglePassSampler  # noqa: E402
from model.execution import prefix_weights  # noqa: E402
from model.fastwam import FastWAM  # noqa: E402
from model.rtc import sample_actions_guided  # noqa: E402
from model.sampling import sample_joint  # noqa: E402


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # Process peak resident set (KiB on Linux): coarse, but includes torch's CPU allocations.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time(fn, iters: int, warmup: int, device: torch.device) -> dict:
    """Wall-clock p50/p95 (ms) and the p50 of this process's CPU time per call (ms): on a shared
    machine the wall clock includes waiting for a core, the CPU time does not."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "p50_ms": float(np.percentile(wall, 50) * 1e3),
        "p95_ms": float(np.percentile(wall, 95) * 1e3),
        "cpu_p50_ms": float(np.percentile(cpu, 50) * 1e3),
    }


def _inputs(cfg, device, dtype, tokens: int = 8):
    g = torch.Generator().manual_seed(0)
    lh, lw = cfg.latent_hw
    latent = torch.randn((1, cfg.video.in_dim, 1, lh, lw), generator=g).to(device, dtype)
    ctx = torch.randn((1, tokens, cfg.text_dim), generator=g).to(device, dtype)
    mask = torch.ones((1, tokens), dtype=torch.bool, device=device)
    proprio = torch.randn((1, cfg.proprio_dim), generator=g).to(device, dtype)
    noise = torch.randn((1, cfg.action_horizon, cfg.action_dim), generator=g).to(device, dtype)
    return latent, ctx, mask, proprio, noise


def _emit(**fields) -> None:
    print(json.dumps({"bench": "inference", **fields}), flush=True)


def bench_preset(name: str, device: torch.device, dtype: torch.dtype, iters: int, joint_iters: int,
                 warmup: int = 2, kernels: str = "auto") -> dict:
    """Single-pass vs Joint for one preset on one device; returns the summary line's fields."""
    cfg = get_preset(name)
    torch.manual_seed(0)
    model = FastWAM(cfg).to(device=device, dtype=dtype).eval()
    latent, ctx, mask, proprio, noise = _inputs(cfg, device, dtype, tokens=cfg.encoder.tokens_per_task)
    sampler = SinglePassSampler(model, kernels=kernels)
    common = dict(preset=name, device=device.type, dtype=str(dtype).replace("torch.", ""),
                  steps=cfg.num_inference_steps, threads=torch.get_num_threads())
    with torch.inference_mode():
        single = _time(lambda: sampler(latent, ctx, mask, proprio, noise=noise), iters, warmup, device)
        _emit(mode="single_pass", **single, iters=iters, peak_mem_mb=_peak_mem_mb(device), **common)
        joint = _time(lambda: sample_joint(model, latent, ctx, mask, proprio, noise=noise, joint=True),
                      joint_iters, min(warmup, 1), device)
        _emit(mode="joint", **joint, iters=joint_iters, peak_mem_mb=_peak_mem_mb(device), **common)
        # RTC's default guide: every H/4 ticks, so H/4 frozen at most and 3H/4 of overlap.
        h = cfg.action_horizon
        weights = torch.from_numpy(prefix_weights(h // 4, h - h // 4, h))
        prefix = torch.randn(noise.shape, generator=torch.Generator().manual_seed(1)).to(device, dtype)
        guided = _time(lambda: sample_actions_guided(model, latent, ctx, mask, proprio, prefix, weights, 5.0, noise),
                       iters, warmup, device)
        _emit(mode="rtc_guided", **guided, iters=iters, peak_mem_mb=_peak_mem_mb(device), **common)
    summary = dict(mode="ratio", joint_over_single_p50=joint["p50_ms"] / single["p50_ms"],
                   joint_over_single_cpu_p50=joint["cpu_p50_ms"] / single["cpu_p50_ms"],
                   rtc_over_single_p50=guided["p50_ms"] / single["p50_ms"],
                   rtc_over_single_cpu_p50=guided["cpu_p50_ms"] / single["cpu_p50_ms"], **common)
    _emit(**summary)
    return summary


def bench_policy_end_to_end(name: str, device: torch.device, dtype: torch.dtype, iters: int, warmup: int = 2) -> None:
    """The runtime path: canvas from three 240x320 cameras, our VAE, task embedding, sampling."""
    import tempfile
    from types import SimpleNamespace

    from model.checkpoint import NormStats, save_checkpoint
    from model.encoders import build_encoders
    from model.policy import FastWAMPolicy

    cfg = get_preset(name)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(tmp, FastWAM(cfg), cfg, NormStats.identity(cfg.action_dim), 0, build_encoders(cfg))
        policy = FastWAMPolicy.from_checkpoint(tmp, device=device, dtype=dtype)
    rng = np.random.default_rng(0)
    obs = SimpleNamespace(
        qpos=np.zeros(14, np.float32),
        images={c: rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for c in cfg.camera_names},
        task=cfg.encoder.tasks[0] if cfg.encoder.tasks else "",
    )
    timing = _time(lambda: policy.predict_chunk(obs), iters, warmup, device)
    _emit(mode="policy_end_to_end", preset=name, device=device.type, dtype=str(dtype).replace("torch.", ""),
          steps=cfg.num_inference_steps, **timing, iters=iters, peak_mem_mb=_peak_mem_mb(device),
          threads=torch.get_num_threads())


def bench_gpu_path(name: str, device: torch.device, dtype: torch.dtype, iters: int, compile: bool, cuda_graphs: bool,
                   warmup: int = 3) -> None:
    """The deployment path: bf16, SDPA flash kernels, torch.compile + one CUDA graph for the
    action steps. With device=cpu and compile/cuda_graphs off it runs the same code (smoke)."""
    cfg = get_preset(name)
    with torch.device("meta"):
        model = FastWAM(cfg)  # built without memory, then materialised on the device
    model = model.to_empty(device=device).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    model.eval()
    latent, ctx, mask, proprio, noise = _inputs(cfg, device, dtype, tokens=cfg.encoder.tokens_per_task)
    sampler = SinglePassSampler(model, kernels="gpu", compile=compile, cuda_graphs=cuda_graphs)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        timing = _time(lambda: sampler(latent, ctx, mask, proprio, noise=noise), iters, warmup, device)
    _emit(mode="single_pass_cuda_graphs" if cuda_graphs else "single_pass_gpu_kernels", preset=name,
          device=device.type, dtype=str(dtype).replace("torch.", ""), steps=cfg.num_inference_steps,
          compile=compile, cuda_graphs=cuda_graphs, **timing, iters=iters,
          peak_mem_mb=_peak_mem_mb(device), threads=torch.get_num_threads())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", action="append", help="preset(s) to run (default: all that fit)")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default 1 on CPU: on the shared 2-core machine a second OpenMP "
                             "thread spinning on a busy core makes small ops many times slower)")
    parser.add_argument("--smoke", action="store_true", help="every path once on tiny, in seconds")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if args.threads or args.smoke or not cuda:
        torch.set_num_threads(args.threads or 1)
    cpu = torch.device("cpu")
    if args.smoke:
        bench_preset("tiny", cpu, torch.float32, iters=2, joint_iters=1, warmup=0)
        bench_preset("tiny", cpu, torch.float32, iters=1, joint_iters=1, warmup=0, kernels="gpu")
        bench_policy_end_to_end("tiny", cpu, torch.float32, iters=1, warmup=0)
        bench_gpu_path("tiny", cpu, torch.float32, iters=1, compile=False, cuda_graphs=False, warmup=0)
        return 0
    presets = args.preset or (["tiny", "small", "fastwam-5b"] if cuda else ["tiny", "small"])
    for name in presets:
        if cuda:
            dev, dtype = torch.device("cuda"), torch.bfloat16
            if name == "fastwam-5b":
                bench_gpu_path(name, dev, dtype, args.iters, compile=True, cuda_graphs=True)
            bench_preset(name, dev, dtype, iters=args.iters, joint_iters=max(3, args.iters // 5))
        else:
            small = name == "small"
            bench_preset(name, cpu, torch.float32, iters=3 if small else args.iters,
                         joint_iters=2 if small else max(5, args.iters // 3), warmup=1 if small else 3)
            if name == "tiny":
                bench_policy_end_to_end(name, cpu, torch.float32, iters=args.iters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
