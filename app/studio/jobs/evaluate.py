"""`python run.py eval`: run a trained policy on the simulated towel fold and report how it does.

    python run.py eval --checkpoint DIR --episodes N --seed S [--execute K] [--no-ensemble]
                       [--max-seconds T] [--save-dir DIR] [--rig configs/sim.toml] [--allow-mismatch]

Before anything runs, the checkpoint's inputs (the cameras it read, with any --camera-map it was
trained through, their image sizes, the action/state widths and tasks: `model.compatibility`) are
compared with the rig's; a mismatch is refused with both sides named (exit code 4), unless
`--allow-mismatch` (experts) runs it anyway with a warning.

For each seed S, S+1, ...: the towel is reset to that seed's pose, the policy drives the arms
through the real `ControlLoop` (safety filter, blend-in, the same path as the studio) on the real
`SimRig`, with single-pass chunked execution: the policy predicts a chunk of H actions every K
ticks from the newest observation, and each tick's action is the weighted mean of the chunks that
cover it (ACT's temporal ensembling; K = 4 by default). `--no-ensemble` executes the first K
actions of each chunk as they are (K = H/2 by default). Measured on the tiny policies (50 seeds):
ensembling took the fold from 32% to 96% without video co-training and from 26% to 30% with it.
The loop is stepped tick by tick with
`ControlLoop.tick_once()`, without real-time pacing: simulated time (and so the rollout) is what
it would be in real time, and evaluation runs as fast as the CPU allows. The policy runs
synchronously, so its latency cannot change the rollout; it is measured and reported.

An episode succeeds as soon as the sim's towel-fold measure says so (both near corners on their
far corners, towel settled, checked every `--check-every-s`), and fails when `--max-seconds`
pass first. Reported (JSON lines on stdout): per episode success, fold error and timing; at the
end the success rate with its 95% Wilson interval, mean fold error and policy latency p50/p95.
`--save-dir` records every rollout as an episode (labelled success/failure) for review.

No Qt here: this runs headless (the app may start it through QProcess).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from app.studio.evaluation import EvalTally, RolloutSettings, rollout
from app.studio.session import SessionError, open_session
from model.chunking import ChunkedPolicySource, set_cpu_threads
from model.compatibility import RigInputs, compare, read_policy_inputs
from model.errors import ModelError, PolicyRigMismatch
from model.json_lines import json_line
from robot.capabilities import EvaluatesTask, Resettable, Simulation
from robot.rig import RigError
from robot.rig_config import RigFileError

from app.studio.paths import DEFAULT_RIG_FILE

log = logging.getLogger(__name__)



def emit(event: str, **fields) -> None:
    print(json_line({"event": event, **fields}), flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python run.py eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint folder, or a run folder (its best/ checkpoint)")
    p.add_argument("--episodes", type=int, default=50, help="rollouts, one towel seed each")
    p.add_argument("--seed", type=int, default=1000,
                   help="towel seed of the first rollout (then +1); demos use 0.., so 1000.. is unseen")
    p.add_argument("--execute", type=int, default=None,
                   help="ticks between predicted chunks (default: 4 with ensembling, else half the horizon: 16 of 32)")
    p.add_argument("--ensemble", action=argparse.BooleanOptionalAction, default=True,
                   help="temporal ensembling (ACT): each action is the weighted mean of the chunks covering it; "
                        "--no-ensemble executes each chunk's first --execute actions as they are")
    p.add_argument("--ensemble-decay", type=float, default=0.01, help="with ensembling: weight exp(-decay * i), "
                   "i = 0 for the oldest chunk")
    p.add_argument("--max-seconds", type=float, default=15.0, help="simulated seconds before a rollout counts as failed")
    p.add_argument("--check-every-s", type=float, default=0.5, help="how often the fold is measured (simulated s)")
    p.add_argument("--save-dir", default=None, help="record each rollout as an episode into this store")
    p.add_argument("--rig", default=str(DEFAULT_RIG_FILE), help="the simulated rig's file")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    p.add_argument("--policy-seed", type=int, default=0, help="seed of the policy's sampling noise")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="experts: run a checkpoint whose cameras, image sizes, widths or task differ from the rig's "
                        "(refused otherwise); each view reads its trained camera if the rig has it, else its own name")
    return p


#: Ticks between chunks when ensembling: 4x the policy calls of plain chunking at H/2, within a
#: tick's budget for tiny on a CPU (a chunk takes about 20 ms).
ENSEMBLE_EVERY = 4


def _resolve_checkpoint(path: str) -> Path:
    """The checkpoint --checkpoint names: a run folder's best/, else its newest complete
    checkpoint; each damaged one passed over is a warning naming it."""
    from model.resume import resolve_checkpoint

    def skipped(folder: Path, reason: str) -> None:
        emit("warning", kind="damaged_checkpoint", path=str(folder),
             message=f"checkpoint {folder} cannot be loaded ({reason}); using an earlier one")

    return resolve_checkpoint(path, on_skip=skipped)


def run_eval(args: argparse.Namespace) -> dict:
    """The evaluation; returns the summary dict (also printed)."""
    from model.policy import FastWAMPolicy

    if args.episodes < 1:
        raise ValueError("--episodes must be at least 1")
    if args.max_seconds <= 0 or args.check_every_s <= 0:
        raise ValueError("--max-seconds and --check-every-s must be positive")
    if args.threads > 0:
        set_cpu_threads(args.threads)
    checkpoint = _resolve_checkpoint(args.checkpoint)
    policy = FastWAMPolicy.from_checkpoint(checkpoint, device=args.device, seed=args.policy_seed)
    horizon = policy.config.action_horizon
    if args.execute is None:
        args.execute = min(ENSEMBLE_EVERY, horizon) if args.ensemble else max(1, horizon // 2)
    if not 1 <= args.execute <= horizon:
        raise ValueError(f"--execute must be within 1 and the policy's horizon {horizon}, got {args.execute}")
    if not (args.ensemble_decay >= 0 and args.ensemble_decay < float("inf")):
        raise ValueError(f"--ensemble-decay must be a finite number >= 0 (e.g. 0.01), got {args.ensemble_decay}")

    # Render inside read(), in step with the simulation: rollouts are stepped as fast as the CPU
    # goes, which would outrun a camera thread and show the policy stale frames (run.py demos
    # records its training data the same way).
    session = open_session(args.rig, args.save_dir, record=bool(args.save_dir), render_thread=False)
    rig = session.rig
    try:
        if not (isinstance(rig, Simulation) and isinstance(rig, Resettable) and isinstance(rig, EvaluatesTask)):
            raise RigError(f"eval needs the simulated rig with its towel task; {args.rig} opens {rig.name}")
        fit = compare(read_policy_inputs(checkpoint), RigInputs.of_images(rig.name, rig.read().images, rig.task_name))
        fit.require(checkpoint, allow_mismatch=args.allow_mismatch)
        if not fit.ok:
            emit("warning", kind="checkpoint_mismatch", message="--allow-mismatch: running a checkpoint that does not "
                 f"fit the rig {rig.name}: " + "; ".join(m.message for m in fit.mismatches))
        policy.camera_map = dict(fit.camera_feeds)
        rate = rig.control_rate_hz
        settings = RolloutSettings(max_ticks=int(round(args.max_seconds * rate)),
                                   check_ticks=max(1, int(round(args.check_every_s * rate))), checkpoint=checkpoint)
        tally = EvalTally()
        started = time.monotonic()
        emit("eval_start", checkpoint=str(checkpoint), variant=policy.config.variant, preset=policy.config.name,
             episodes=args.episodes, seeds=[args.seed, args.seed + args.episodes - 1], execute=args.execute,
             ensemble=args.ensemble, horizon=horizon, max_seconds=args.max_seconds)
        for seed in range(args.seed, args.seed + args.episodes):
            source = ChunkedPolicySource(policy, args.execute, ensemble=args.ensemble, ensemble_decay=args.ensemble_decay)
            line = rollout(session, source, seed, settings)
            line["chunks"] = source.chunks
            tally.add(line["success"], line["fold_error_m"], source.latencies_s)
            emit("episode", **line)
    finally:
        session.close()
    summary = {**tally.summary(), "checkpoint": str(checkpoint), "variant": policy.config.variant,
               "seeds": [args.seed, args.seed + args.episodes - 1], "execute": args.execute,
               "ensemble": args.ensemble, "horizon": horizon,
               "wall_s": round(time.monotonic() - started, 1)}
    emit("summary", **summary)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 done, 2 bad arguments, 4 checkpoint/model problem, 1 rig or other failure."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        run_eval(args)
        return 0
    except ValueError as error:
        emit("error", kind="invalid_argument", message=str(error), what_to_do="Fix the flag; see `python run.py eval --help`.")
        return 2
    except PolicyRigMismatch as error:
        emit("error", kind="checkpoint_mismatch", message=str(error),
             what_to_do="Evaluate it on a rig file whose cameras, image sizes and task match the checkpoint's, or "
                        "pass --allow-mismatch to run it anyway.")
        return 4
    except ModelError as error:
        emit("error", kind="model", message=str(error), what_to_do="Point --checkpoint at a run folder or checkpoint "
             "written by `python run.py train`.")
        return 4
    except (RigError, RigFileError, SessionError) as error:
        emit("error", kind="rig", message=str(error), what_to_do="Check the rig file given with --rig.")
        return 1
    except KeyboardInterrupt:
        emit("cancelled", message="evaluation stopped; no summary")
        return 130


if __name__ == "__main__":
    sys.exit(main())
