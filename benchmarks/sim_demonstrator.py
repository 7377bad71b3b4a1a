"""Benchmark: the scripted towel fold on the simulated rig, and what one sim tick costs.

    .venv/bin/python benchmarks/sim_demonstrator.py [--episodes 20] [--first-seed 0]
        [--physics-timestep-s 0.002] [--ticks 200] [--skip-episodes] [--skip-tick-cost]

Prints JSON lines on stdout:
- "episode": per seed - success, fold error (m), corner distances, episode length (simulated s
  and ticks), wall time; the rig runs without cameras (they do not change the physics);
- "summary": success rate over the episodes, mean/max fold error, mean episode length;
- "tick_cost": per-tick cost at 240x320 with three cameras, measured over --ticks ticks while the
  arms hold the start pose and the towel lies on the table: physics (command(): substeps, grasp
  model, friction), rendering (read() on the ticks whose frame is due: three cameras), IK (one
  small Cartesian step of one arm), and the real-time factor of read()+command() back to back
  (what the sim reaches when nothing else paces it). The 1-minute load average is printed with
  it: on a shared machine the numbers move with the neighbours' load.
Seeds are consecutive from --first-seed, never picked. Logging goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from robot.aloha import start_pose  # noqa: E402
from robot.kinematics import BimanualKinematics  # noqa: E402
from robot.sim.config import SimRigConfig  # noqa: E402
from robot.sim.demonstrator import ScriptedFoldDemonstrator  # noqa: E402
from robot.sim.sim_rig import SimRig  # noqa: E402


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def run_episodes(args, kinematics: BimanualKinematics) -> None:
    config = SimRigConfig(camera_names=(), physics_timestep_s=args.physics_timestep_s)
    results = []
    with SimRig(config) as rig:
        demo = ScriptedFoldDemonstrator(rig, kinematics)
        for seed in range(args.first_seed, args.first_seed + args.episodes):
            rig.reset_episode(seed)
            started = time.perf_counter()
            observation = rig.read()
            demo.start(observation)
            while not demo.finished:
                rig.command(demo.next_action(observation))
                observation = rig.read()
            result = rig.evaluate_task()
            record = {
                "kind": "episode",
                "seed": seed,
                "success": result.success,
                "fold_error_m": round(result.fold_error_m, 4),
                "corner_distances_m": [round(d, 4) for d in result.corner_distances_m],
                "settled": result.settled,
                "episode_s": round(rig.sim_time_s, 3),
                "ticks": rig.tick_count,
                "wall_s": round(time.perf_counter() - started, 2),
            }
            results.append(record)
            emit(record)
    errors = np.array([r["fold_error_m"] for r in results])
    emit(
        {
            "kind": "summary",
            "episodes": len(results),
            "success_rate": sum(r["success"] for r in results) / len(results),
            "fold_error_m_mean": round(float(errors.mean()), 4),
            "fold_error_m_max": round(float(errors.max()), 4),
            "episode_s_mean": round(float(np.mean([r["episode_s"] for r in results])), 3),
            "physics_timestep_s": args.physics_timestep_s,
            "seeds": [args.first_seed, args.first_seed + args.episodes - 1],
        }
    )


def run_tick_cost(args, kinematics: BimanualKinematics) -> None:
    # 3 cameras, 240x320, 25 fps, rendered inside read() so the render cost is what read() measures.
    config = SimRigConfig(physics_timestep_s=args.physics_timestep_s, render_thread=False)
    with SimRig(config) as rig:
        action = start_pose()
        rig.read()  # builds the renderer on this thread
        for _ in range(20):
            rig.command(action)
        # The control loop's order: read() (renders when a frame is due), then command().
        read_s, command_s, tick_s, render_read_s = [], [], [], []
        previous_times = rig.read().image_times_s
        for _ in range(args.ticks):
            t0 = time.perf_counter()
            observation = rig.read()
            t1 = time.perf_counter()
            rig.command(action)
            t2 = time.perf_counter()
            read_s.append(t1 - t0)
            command_s.append(t2 - t1)
            tick_s.append(t2 - t0)
            if observation.image_times_s != previous_times:
                render_read_s.append(t1 - t0)
            previous_times = observation.image_times_s
        q = start_pose().astype(np.float64)
        pose = kinematics.forward(q)["left"]
        ik_s = []
        for i in range(200):
            t0 = time.perf_counter()
            kinematics.solve("left", q, pose[0] + 0.003 * np.array([np.cos(i), np.sin(i), 0.5]), pose[1], max_iterations=20)
            ik_s.append(time.perf_counter() - t0)
        ms = lambda values, p: round(float(np.percentile(values, p)) * 1e3, 2)  # noqa: E731
        emit(
            {
                "kind": "tick_cost",
                "image_hw": [config.image_height, config.image_width],
                "cameras": len(config.camera_names),
                "camera_fps": config.camera_fps,
                "physics_timestep_s": config.physics_timestep_s,
                "substeps": config.substeps,
                "cloth_vertices": config.towel_grid**2,
                "command_ms_p50": ms(command_s, 50),
                "command_ms_p95": ms(command_s, 95),
                "render_3cams_ms_p50": ms(render_read_s, 50),
                "render_3cams_ms_p95": ms(render_read_s, 95),
                "frames_rendered": len(render_read_s),
                "tick_ms_mean": round(float(np.mean(tick_s)) * 1e3, 2),
                "tick_ms_p95": ms(tick_s, 95),
                "real_time_factor": round(config.control_period_s / float(np.mean(tick_s)), 3),
                "ik_small_step_ms_p50": ms(ik_s, 50),
                "ik_small_step_ms_p95": ms(ik_s, 95),
                "cpu_count": os.cpu_count(),
                "machine": platform.machine(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--physics-timestep-s", type=float, default=SimRigConfig.physics_timestep_s)
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--skip-episodes", action="store_true")
    parser.add_argument("--skip-tick-cost", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    kinematics = BimanualKinematics()
    if not args.skip_tick_cost:
        run_tick_cost(args, kinematics)
    if not args.skip_episodes:
        run_episodes(args, kinematics)


if __name__ == "__main__":
    main()
