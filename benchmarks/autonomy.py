"""What running the policy costs the control loop, and how late the policy is: the sim rig at
50 Hz in real time, recording, under the tiny policy (the studio's own path: `Studio.load_policy`,
`start_autonomy`), with and without the window, against the same with the policy off.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/autonomy.py [--seconds 60]
        [--runs off,fastwam,fastwam+window,joint,off+window] [--strategy ensemble] [--checkpoint DIR]

Runs: "off" (the arm held), "fastwam" (single-pass tiny policy on the studio's policy thread),
"joint" (the Joint variant: test-time imagination), each optionally "+process" (the policy in a
process of its own, `model.policy_process`) and "+window" (the studio window painting, offscreen).
Each run is a fresh process (`--run NAME`, so torch, Qt and the GIL start clean) and prints one
JSON line; the parent prints them and a "comparison" line: the control-period p99 with the policy
on minus with it off (the issue's 1 ms threshold for moving the runner into its own process), and
the Joint variant's inference latency over Fast-WAM's (test-time imagination against single pass).

Fields per run: control period p50/p99/max (ms, over every tick of the run), ticks late and
periods missed (the loop's own counters), chunks, inference p50/p95/p99/max, observation age and
observation-to-command p50/p95/p99 (ms), actions skipped, the policy's faults (events), the GUI's
paints per second, CPU count and the 1-minute load average at the end (the machine is shared:
read the numbers with it).

Policies: random weights of the `tiny` preset (inference time does not depend on the weights) with
normalisation centred on the start pose, so the arm stays near it; `--checkpoint` runs a trained
one instead. `--device cuda --preset fastwam-5b` is the GPU variant (bf16; needs the Wan2.2 VAE and
text embeddings, so it is for a lent GPU machine with them, not this CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402

DEFAULT_RUNS = "off,fastwam,fastwam+process,fastwam+window,off+window,joint"


def random_checkpoint(folder: Path, variant: str, preset: str = "tiny") -> Path:
    """A checkpoint of `preset` with random weights and start-pose normalisation."""
    import torch

    from model.checkpoint import NormStats, save_checkpoint
    from model.config import get_preset
    from model.encoders import build_encoders
    from model.fastwam import FastWAM
    from robot.aloha import start_pose

    torch.manual_seed(0)
    cfg = get_preset(preset, variant=variant)
    pose = start_pose()
    stats = NormStats(pose.copy(), np.ones(14, np.float32), pose.copy(), np.full(14, 0.003, np.float32))
    save_checkpoint(folder, FastWAM(cfg), cfg, stats, 0, build_encoders(cfg))
    return folder


def ms(values, q) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    return None if values.size == 0 else round(float(np.percentile(values, q)) * 1e3, 2)


def run_one(name: str, seconds: float, rig: Path, strategy: str, checkpoint: str | None, device: str) -> dict:
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from app.studio.autonomy import AutonomySettings
    from app.studio.snapshot import AutonomyState
    from app.studio.studio import Studio
    from app.ui.main_window import StudioWindow
    from robot.types import Severity

    policy, *modifiers = name.split("+")
    with_window, in_process, nice = "window" in modifiers, "process" in modifiers, 10 if "nice" in modifiers else 0
    work = Path(tempfile.mkdtemp(prefix="autonomy-bench-"))
    app = QApplication.instance() or QApplication(["autonomy-benchmark"])
    studio = Studio(rig, work / "store")
    window = StudioWindow(studio) if with_window else None
    if window is not None:
        window.show()
    studio.start()
    if not studio.wait_until_running(120):
        raise SystemExit("the rig did not start: " + "; ".join(e.message for e in studio.events.all()))
    if policy != "off":
        folder = checkpoint or str(random_checkpoint(work / policy, "joint" if policy == "joint" else "fastwam"))
        # A generous camera-age limit: on a loaded shared machine the sim's render thread falls
        # behind, and the point here is the loop's timing, not that fault (it is reported if it happens).
        settings = AutonomySettings(device=device, strategy=strategy, max_image_age_s=2.0, process=in_process,
                                    process_nice=nice)
        if not studio.load_policy(folder, settings).result(600):
            raise SystemExit("the policy did not load: " + "; ".join(e.message for e in studio.events.all()))
    studio.start_recording("fold the towel", "benchmark").result(60)
    chunks = []
    events_start = len(studio.events.all())
    if policy != "off":
        studio.autonomy.runner.add_chunk_listener(chunks.append)
        studio.start_autonomy()
    # The first seconds (renderer start-up, the blend into the policy, the first chunk) are not measured.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    periods = []
    studio.session.subscribe(lambda record: periods.append(record.timings.period_s))  # control thread: an append
    before = studio.loop.snapshot().stats
    chunks.clear()
    paints0 = window.paint_count if window is not None else 0
    started = time.monotonic()
    # A local event loop: QApplication.quit() would also ask the window to close (Qt 6).
    events_loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), events_loop.quit)
    events_loop.exec()
    wall = time.monotonic() - started
    after = studio.loop.snapshot().stats
    measured = list(chunks)
    # Faults since autonomy started (one in the first seconds ends the policy's part of the run).
    faults = [e.message for e in studio.events.all()[events_start:] if e.severity is Severity.ERROR]
    state = studio.snapshot().autonomy.state
    applied = [c for c in measured if c.apply_tick >= 0]
    result = {
        "benchmark": "autonomy",
        "run": name,
        "policy": policy,
        "window": with_window,
        "process": in_process,
        "process_nice": nice,
        "strategy": strategy if policy != "off" else None,
        "seconds": round(wall, 1),
        "ticks": len(periods),
        "period_p50_ms": ms(periods, 50),
        "period_p99_ms": ms(periods, 99),
        "period_max_ms": ms(periods, 100),
        "late_ticks": after.late_ticks - before.late_ticks,
        "missed_periods": after.missed_deadlines - before.missed_deadlines,
        "chunks": len(measured),
        "inference_p50_ms": ms([c.inference_s for c in measured], 50),
        "inference_p95_ms": ms([c.inference_s for c in measured], 95),
        "inference_p99_ms": ms([c.inference_s for c in measured], 99),
        "inference_max_ms": ms([c.inference_s for c in measured], 100),
        "obs_age_p50_ms": ms([c.obs_age_s for c in measured], 50),
        "obs_to_command_p50_ms": ms([c.obs_to_command_s for c in applied], 50),
        "obs_to_command_p95_ms": ms([c.obs_to_command_s for c in applied], 95),
        "obs_to_command_p99_ms": ms([c.obs_to_command_s for c in applied], 99),
        "skipped_actions": sum(c.skipped for c in measured),
        "policy_state": state.value if policy != "off" else None,
        "faults": faults[:3],
        "paints_per_s": round(((window.paint_count if window else 0) - paints0) / wall, 1),
        "cpu_count": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    if policy != "off" and state in (AutonomyState.AUTONOMOUS, AutonomyState.INTERVENTION):
        studio.stop_autonomy()
    studio.discard_recording().result(60)
    if window is not None:
        window.ask_recording_choice = lambda: None  # no dialog: the recording is discarded already
        window.close()
        app.processEvents()
    studio.shutdown(recording_label=None)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/autonomy.py", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--runs", default=DEFAULT_RUNS,
                        help="comma-separated: off, fastwam, joint, each optionally +process (the policy in its own "
                             "process) and +window")
    parser.add_argument("--strategy", default="ensemble", choices=("plain", "ensemble", "rtc"))
    parser.add_argument("--checkpoint", default=None, help="a trained checkpoint instead of random tiny weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rig", default=str(ROOT / "configs" / "sim.toml"))
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)  # one run, in this process
    args = parser.parse_args(argv)
    if args.run is not None:
        print(json.dumps(run_one(args.run, args.seconds, Path(args.rig), args.strategy, args.checkpoint, args.device)),
              flush=True)
        return 0
    results = {}
    for name in [r.strip() for r in args.runs.split(",") if r.strip()]:
        cmd = [sys.executable, __file__, "--run", name, "--seconds", str(args.seconds), "--strategy", args.strategy,
               "--device", args.device, "--rig", args.rig]
        if args.checkpoint:
            cmd += ["--checkpoint", args.checkpoint]
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.seconds * 3 + 300)
        except subprocess.TimeoutExpired:
            print(json.dumps({"benchmark": "autonomy", "run": name, "error": "timed out"}), flush=True)
            continue
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            print(json.dumps({"benchmark": "autonomy", "run": name, "error": proc.stderr.strip()[-1500:]}), flush=True)
            continue
        results[name] = json.loads(lines[-1])
        print(lines[-1], flush=True)
    comparison = {"benchmark": "autonomy", "comparison": True}
    for policy_run, off_run in (("fastwam", "off"), ("fastwam+process", "off"), ("fastwam+window", "off+window"),
                                ("fastwam+process+window", "off+window"), ("joint", "off")):
        if policy_run in results and off_run in results:
            comparison[f"period_p99_increase_ms[{policy_run} vs {off_run}]"] = round(
                results[policy_run]["period_p99_ms"] - results[off_run]["period_p99_ms"], 2)
    if "fastwam" in results and "joint" in results and results["fastwam"]["inference_p50_ms"] \
            and results["joint"]["inference_p50_ms"]:
        comparison["joint_over_fastwam_inference_p50"] = round(
            results["joint"]["inference_p50_ms"] / results["fastwam"]["inference_p50_ms"], 2)
    print(json.dumps(comparison), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
