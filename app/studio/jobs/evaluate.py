"""`python run.py eval`: run a trained policy on the simulated towel fold and report how it does.

    python run.py eval --checkpoint DIR --episodes N --seed S [--strategy plain|ensemble|rtc]
                       [--execute K] [--delay-ms D|auto | --real-time] [--threads N]
                       [--max-seconds T] [--save-dir DIR] [--rig configs/sim.toml] [--allow-mismatch]

Before anything runs, the checkpoint's inputs (the cameras it read, with any --camera-map it was
trained through, their image sizes, the action/state widths and tasks: `model.compatibility`) are
compared with the rig's; a mismatch is refused with both sides named (exit code 4), unless
`--allow-mismatch` (experts) runs it anyway with a warning.

For each seed S, S+1, ...: the towel is reset to that seed's pose and the policy drives the arms
through the real `ControlLoop` (safety filter, blend-in, the same path as the studio) on the real
`SimRig`, through `model.runner.PolicyRunner` with an execution strategy (`model.execution`):

- `ensemble` (default): ACT's temporal ensembling, a chunk every K = 4 ticks, each action the
  weighted mean of the chunks covering it;
- `plain`: execute K of the chunk (default half of it), then re-plan;
- `rtc`: real-time chunking, a chunk every K ticks (default a quarter of it) in-painted to
  continue the plan it replaces.

Timing: by default (`--delay-ms 0`) the loop is stepped tick by tick without pacing and each chunk
acts at once: the policy's own speed cannot change the rollout. `--delay-ms D` makes every chunk act
D ms of *simulated* time after its observation (the previous plan keeps executing meanwhile; its
actions for the ticks that passed are skipped), so success under inference delay is measured the
same way on any machine; `--delay-ms auto` delays each chunk by its own measured latency.
`--real-time` instead paces the sim at the control rate with the policy on its own thread and the
cameras on theirs: exactly the studio's path, on this machine's clock.

`--threads` (default: 1 on machines of up to 4 cores) sets torch's CPU threads: torch's own default
spins a thread per core, and beside another process that turned a 105 ms median into 3-5 s stalls.

An episode succeeds as soon as the sim's towel-fold measure says so (both near corners on their
far corners, towel settled, checked every `--check-every-s`), and fails when `--max-seconds`
pass first. Reported (JSON lines on stdout): per episode success, fold error and timing; at the
end the success rate with its 95% Wilson interval, mean fold error, and per chunk the inference
latency and the observation-to-command latency (p50/p95/p99/max). `--save-dir` records every
rollout as an episode (labelled success/failure, with the policy's latency tables) for review.

No Qt here: this runs headless (the app may start it through QProcess).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from app.studio.autonomy import policy_attributes, record_policy
from app.studio.checkpoints import checkpoint_hash, describe_checkpoint
from app.studio.evaluation import EvalTally, RolloutSettings, rollout
from app.studio.paths import DEFAULT_RIG_FILE
from app.studio.session import SessionError, open_session
from model.compatibility import RigInputs, compare, read_policy_inputs
from model.errors import ModelError, PolicyRigMismatch
from model.json_lines import json_line
from robot.capabilities import EvaluatesTask, Resettable, Simulation
from robot.rig import RigError
from robot.rig_config import RigFileError

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
    p.add_argument("--strategy", choices=("plain", "ensemble", "rtc"), default="ensemble",
                   help="how chunks become actions: plain chunks, ACT's temporal ensembling, real-time chunking")
    p.add_argument("--execute", type=int, default=None,
                   help="ticks between chunks (default: plain half the horizon, ensemble 4, rtc a quarter)")
    p.add_argument("--ensemble-decay", type=float, default=0.01, help="ensemble: weight exp(-decay * i), "
                   "i = 0 for the oldest chunk")
    p.add_argument("--rtc-max-guidance", type=float, default=5.0, help="rtc: ceiling of the guidance weight (beta)")
    timing = p.add_mutually_exclusive_group()
    timing.add_argument("--delay-ms", default="0",
                        help="simulated inference delay: each chunk acts this many ms after its observation "
                             "(a number, or 'auto' for each chunk's measured latency)")
    timing.add_argument("--real-time", action="store_true",
                        help="pace the sim at the control rate with the policy on its own thread (the studio's path)")
    p.add_argument("--max-seconds", type=float, default=15.0, help="simulated seconds before a rollout counts as failed")
    p.add_argument("--check-every-s", type=float, default=0.5, help="how often the fold is measured (simulated s)")
    p.add_argument("--save-dir", default=None, help="record each rollout as an episode into this store")
    p.add_argument("--rig", default=str(DEFAULT_RIG_FILE), help="the simulated rig's file")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    p.add_argument("--policy-seed", type=int, default=0, help="seed of the policy's sampling noise")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 on machines of up to 4 cores, else half the cores)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="experts: run a checkpoint whose cameras, image sizes, widths or task differ from the rig's "
                        "(refused otherwise); each view reads its trained camera if the rig has it, else its own name")
    return p


def _resolve_checkpoint(path: str) -> Path:
    """The checkpoint --checkpoint names: a run folder's best/, else its newest complete
    checkpoint; each damaged one passed over is a warning naming it."""
    from model.resume import resolve_checkpoint

    def skipped(folder: Path, reason: str) -> None:
        emit("warning", kind="damaged_checkpoint", path=str(folder),
             message=f"checkpoint {folder} cannot be loaded ({reason}); using an earlier one")

    return resolve_checkpoint(path, on_skip=skipped)


def _delay(text: str) -> float | str:
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--delay-ms takes a number of ms or 'auto', got {text!r}") from None
    if not 0 <= value < 60_000:
        raise ValueError(f"--delay-ms must be within 0 and 60000 ms, got {value:g}")
    return value


def run_eval(args: argparse.Namespace) -> dict:
    """The evaluation; returns the summary dict (also printed)."""
    from model.execution import make_strategy
    from model.policy import FastWAMPolicy
    from model.runner import PolicyRunner, RunnerConfig, default_threads, set_torch_threads

    if args.episodes < 1:
        raise ValueError("--episodes must be at least 1")
    if args.max_seconds <= 0 or args.check_every_s <= 0:
        raise ValueError("--max-seconds and --check-every-s must be positive")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    delay = None if args.real_time else _delay(args.delay_ms)
    threads = args.threads or default_threads()
    set_torch_threads(threads)  # the stepped modes run the policy on this thread
    checkpoint = _resolve_checkpoint(args.checkpoint)
    policy = FastWAMPolicy.from_checkpoint(checkpoint, device=args.device, seed=args.policy_seed)
    horizon = policy.config.action_horizon
    strategy = make_strategy(args.strategy, horizon, args.execute, decay=args.ensemble_decay,
                             max_guidance=args.rtc_max_guidance)

    # Stepped rollouts render inside read(), in step with the simulation: they go as fast as the CPU
    # does, which would outrun a camera thread and show the policy stale frames (run.py demos
    # records its training data the same way). Real time keeps the rig file's camera thread.
    session = open_session(args.rig, args.save_dir, record=bool(args.save_dir),
                           render_thread=None if args.real_time else False)
    rig = session.rig
    runner = None
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
        runner = PolicyRunner(policy, strategy, rig.joint_limits(), RunnerConfig(rate_hz=rate, delay_ms=delay, threads=threads))
        chunks = []
        runner.add_chunk_listener(chunks.append)  # control thread: a list append
        if session.writer is not None:
            session.writer.set_policy_attrs(policy_attributes(
                describe_checkpoint(checkpoint), checkpoint_hash(checkpoint), strategy.settings(),
                policy.device.type, delay))
            record_policy(runner, session.writer)
        settings = RolloutSettings(max_ticks=int(round(args.max_seconds * rate)),
                                   check_ticks=max(1, int(round(args.check_every_s * rate))), checkpoint=checkpoint,
                                   real_time=args.real_time)
        tally = EvalTally()
        started = time.monotonic()
        timing = "real time" if args.real_time else f"{delay} ms simulated delay"
        emit("eval_start", checkpoint=str(checkpoint), variant=policy.config.variant, preset=policy.config.name,
             episodes=args.episodes, seeds=[args.seed, args.seed + args.episodes - 1], **strategy.settings(),
             timing=timing, threads=threads, max_seconds=args.max_seconds)
        for seed in range(args.seed, args.seed + args.episodes):
            chunks.clear()
            line = rollout(session, runner, seed, settings)
            applied = [c for c in chunks if c.apply_tick >= 0]
            line.update(chunks=len(chunks), skipped_actions=sum(c.skipped for c in chunks),
                        dropped_chunks=len(chunks) - len(applied))
            tally.add(line["success"], line["fold_error_m"], [c.inference_s for c in chunks],
                      [c.obs_to_command_s for c in applied])
            emit("episode", **line)
    finally:
        if runner is not None:
            runner.close()
        session.close()
    summary = {**tally.summary(), "checkpoint": str(checkpoint), "variant": policy.config.variant,
               "seeds": [args.seed, args.seed + args.episodes - 1], **strategy.settings(), "timing": timing,
               "threads": threads, "wall_s": round(time.monotonic() - started, 1)}
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
