"""`python run.py train ...`: fine-tune Fast-WAM on recorded episodes -> `main(argv) -> int`.

The flags become a `TrainOptions` (`model.train_options`, checked before torch is imported, so a
wrong flag is answered at once) and the trainer (`model.trainer`) runs them. What it reports is
shown by `app.studio.jobs.console`: on a terminal a bar per stage with the time left and the
losses, and a summary at the end; piped or with --json, JSON lines on stdout, one object per line,
"event" first (`model.run_folder.Event`). Either way the trainer appends the same events to the
run folder's train.jsonl, which the window's Training panel reads.

Cancel (SIGTERM from the window, or Ctrl-C): the current step finishes, a checkpoint is written,
`cancelled` is reported and the exit code is 130; `--resume` continues. Errors are reported as
{"event": "error", "kind": ..., "message": ..., "what_to_do": ...} (`ERRORS`) with the exit code:
2 bad arguments, 3 unusable data, 4 model/checkpoint problem, 5 out of memory, 1 anything else.

Under torchrun (`torchrun --nproc-per-node N run.py train ...`) every process runs this; rank 0
speaks for the run.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from model.config import PRESETS
from model.errors import (
    CameraMismatch,
    CheckpointError,
    CorruptEpisode,
    DataError,
    ModelError,
    ModelTooLarge,
    NoEpisodesMatch,
    OutputFolderError,
    RunFolderError,
    UnreadableEpisode,
    UsageError,
)
from model.run_folder import Event, RunEvents, accepts_start
from model.train_options import (
    DEVICES,
    PRECISIONS,
    STRATEGIES,
    VARIANTS,
    TrainHyper,
    TrainOptions,
    parse_camera_map,
    parse_overrides,
)
from recordings.errors import EpisodeFormatError
from recordings.store import DEFAULT_STORE_DIR

from app.studio.jobs.console import LOG_FORMAT, Bar, Line, Reporter, Shown, Summary, open_reporter
from app.studio.paths import RUN_PY, RUNS_ROOT
from app.studio.training.job import out_arg
from app.studio.training.run_state import STAGE_TEXT, RunState, format_duration
from app.studio.training.settings import default_run_dir

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = RUNS_ROOT / "latent_cache"
EXIT_CANCELLED = 130  # as a shell reports a process ended by Ctrl-C

# ------------------------------------------------------------------------------------------------
# Flags
# ------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D401 - argparse's hook
        raise UsageError(f"{message} (see `python run.py train --help`)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python run.py train",
        description="Fine-tune Fast-WAM on recorded episodes. On a terminal it shows its progress; piped or "
                    "with --json it prints JSON lines.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument("--store", "--episodes", dest="store", nargs="+", default=[str(DEFAULT_STORE_DIR)],
                      help="episode store folders and/or episode files (--episodes: the older name)")
    data.add_argument("--labels", default=None,
                      help="comma-separated labels to use (default: success, plus unlabelled ALOHA/ACT files)")
    data.add_argument("--task", action="append", default=[], help="only episodes of this task (repeatable)")
    data.add_argument("--include", nargs="+", default=[], help="only these episodes (names or paths)")
    data.add_argument("--exclude", nargs="+", default=[], help="leave these episodes out (names or paths)")
    data.add_argument("--control-sources", default=None,
                      help="train only on steps from these comma-separated control sources, e.g. teleop,intervention "
                           "for the corrections made in policy episodes (DAgger); default: every step")
    data.add_argument("--skip-unreadable", action="store_true",
                      help="leave out episodes that cannot be read (damaged, unfinished, a frame that does not "
                           "decode), with a warning naming each; without it such files stop the run before any work")
    data.add_argument("--deep-check", action=argparse.BooleanOptionalAction, default=True,
                      help="read every selected episode whole and decode every frame before any work (remembered "
                           "in --cache-dir for files that did not change); --no-deep-check opens each file only")
    data.add_argument("--default-task", default=None,
                      help="task of files that name none (ALOHA/ACT); default: the preset's first task (with a warning)")
    data.add_argument("--camera-map", nargs="+", default=[], metavar="VIEW=CAMERA",
                      help="which episode camera fills each view of the canvas (cam_high, cam_left_wrist, "
                           "cam_right_wrist), for files whose cameras are named otherwise; every view the files "
                           "lack needs one, e.g. ACT's one camera: cam_high=top cam_left_wrist=top "
                           "cam_right_wrist=top (a wrong one is answered with the mapping that works)")
    data.add_argument("--val-fraction", type=float, default=None, help="share of episodes held out for validation")
    data.add_argument("--val-samples", type=int, default=None, help="validation windows evaluated each time")
    data.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="where encoded latents are kept")
    data.add_argument("--cache-max-gb", type=float, default=50.0,
                      help="keep the cache under this size, removing the least recently used entries of other "
                           "episodes and encoders after the cache stage (0: never remove)")
    data.add_argument("--workers", type=int, default=None, help="data loader processes (default: 0 on CPU, 4 on GPU)")
    data.add_argument("--std-floor", type=float, default=None,
                      help="smallest std used to z-score a joint (default: the normalisation's own floor)")

    model = p.add_argument_group("model")
    model.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    model.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a model config field, e.g. num_layers=2 or video.hidden_dim=128 (JSON values)")
    model.add_argument("--variant", choices=VARIANTS, default=None)
    model.add_argument("--no-video-cotraining", action="store_true",
                       help="ablation: train on the action loss only (same as --variant no_video_cotraining)")
    model.add_argument("--init-from-fastwam", default=None, metavar="PATH",
                       help="start from a Fast-WAM checkpoint: the released training file or one of our folders")
    model.add_argument("--init-from-wan", default=None, metavar="PATH",
                       help="start the video expert from Wan2.2-TI2V-5B DiT weights (safetensors file/folder); "
                            "the action expert is interpolated from it")
    model.add_argument("--wan-vae-dir", default=None, help="local Wan2.2-TI2V-5B folder (fastwam-5b: the VAE)")
    model.add_argument("--text-embeddings", default=None, help="precomputed umT5 task embeddings (fastwam-5b)")
    model.add_argument("--vae-from", default=None, metavar="PATH",
                       help="reuse a trained autoencoder: a run folder, its autoencoder/ folder or a checkpoint")

    opt = p.add_argument_group("optimisation (defaults from the preset)")
    opt.add_argument("--steps", type=int, default=None)
    opt.add_argument("--batch-size", type=int, default=None, help="global batch (split over torchrun processes)")
    opt.add_argument("--lr", type=float, default=None)
    opt.add_argument("--weight-decay", type=float, default=None)
    opt.add_argument("--warmup-fraction", type=float, default=None)
    opt.add_argument("--grad-clip", type=float, default=None)
    opt.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    opt.add_argument("--precision", choices=PRECISIONS, default="auto",
                     help="auto = bf16 autocast on CUDA, fp32 on CPU")
    opt.add_argument("--vae-steps", type=int, default=None)
    opt.add_argument("--vae-batch-size", type=int, default=None)
    opt.add_argument("--vae-lr", type=float, default=None)
    opt.add_argument("--seed", type=int, default=0)

    run = p.add_argument_group("run")
    run.add_argument("--out", default=None, help="run folder (default: runs/<preset>-<date-time>)")
    run.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    run.add_argument("--checkpoint-every", type=int, default=None)
    run.add_argument("--keep-checkpoints", type=int, default=None)
    run.add_argument("--val-every", type=int, default=None)
    run.add_argument("--log-every", type=int, default=None)
    run.add_argument("--stop-after-steps", type=int, default=None,
                     help="stop (like a cancel, with a checkpoint) once this step is reached")
    run.add_argument("--device", choices=DEVICES, default="auto")
    run.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0 = torch's default)")
    run.add_argument("--strategy", choices=STRATEGIES, default="auto",
                     help="under torchrun: ddp (tiny/small) or fsdp (fastwam-5b) by default")
    run.add_argument("--json", action="store_true", help="print JSON lines even on a terminal")
    return p


def options_from_args(args: argparse.Namespace, argv: Sequence[str]) -> TrainOptions:
    """The parsed flags as the trainer's options; UsageError names a wrong one. A run folder left
    to the default is named here and added to the recorded flags, so the same command with
    --resume (the window's Resume) finds it again."""
    if args.no_video_cotraining and args.variant not in (None, "no_video_cotraining"):
        raise UsageError("--no-video-cotraining contradicts --variant " + args.variant)
    hyper = TrainHyper.for_preset(
        args.preset, steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_fraction=args.warmup_fraction, grad_clip=args.grad_clip, grad_checkpointing=args.grad_checkpointing,
        val_fraction=args.val_fraction, val_every=args.val_every, val_samples=args.val_samples,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints, log_every=args.log_every,
        vae_steps=args.vae_steps, vae_batch_size=args.vae_batch_size, vae_lr=args.vae_lr)
    argv = list(argv)
    out = args.out
    if out is None:
        out = str(default_run_dir(args.preset))
        argv += ["--out", out]
    return TrainOptions(
        hyper=hyper, store=tuple(args.store), cache_dir=args.cache_dir, out=out, preset=args.preset,
        labels=tuple(x.strip() for x in args.labels.split(",") if x.strip()) if args.labels else None,
        tasks=tuple(args.task), include=tuple(args.include), exclude=tuple(args.exclude),
        control_sources=tuple(x.strip() for x in (args.control_sources or "").split(",") if x.strip()),
        deep_check=args.deep_check, skip_unreadable=args.skip_unreadable, default_task=args.default_task,
        camera_map=parse_camera_map(args.camera_map), cache_max_gb=args.cache_max_gb,
        workers=args.workers, std_floor=args.std_floor, model_overrides=parse_overrides(args.overrides),
        variant="no_video_cotraining" if args.no_video_cotraining else args.variant,
        init_from_fastwam=args.init_from_fastwam, init_from_wan=args.init_from_wan, wan_vae_dir=args.wan_vae_dir,
        text_embeddings=args.text_embeddings, vae_from=args.vae_from, precision=args.precision, seed=args.seed,
        resume=args.resume, stop_after_steps=args.stop_after_steps, device=args.device, threads=args.threads,
        strategy=args.strategy, argv=tuple(argv), program=(str(RUN_PY), "train"),
    )


# ------------------------------------------------------------------------------------------------
# Errors: what each means for the user
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorRow:
    """How an exception is reported: its kind, the exit code, and what to do (or how to say it)."""

    errors: tuple[type[BaseException], ...]
    kind: str
    exit_code: int
    what_to_do: str | Callable[[Any], str]


#: The first row whose exception type matches applies (so subclasses come before their bases).
ERRORS: tuple[ErrorRow, ...] = (
    ErrorRow((UsageError,), "invalid_argument", 2,
             "Fix the flag named above; `python run.py train --help` lists them all."),
    ErrorRow((OutputFolderError,), "invalid_argument", 2,
             "Pass a folder you can write to with --out (a read-only disk or another user's folder cannot hold a run)."),
    ErrorRow((ModelTooLarge,), "invalid_argument", 2,
             "Choose a smaller --preset, or lower num_layers or the hidden and ffn widths with --set."),
    ErrorRow((RunFolderError,), "run_folder", 2,
             "Add --resume to continue the run, or pass a new --out folder to start another."),
    ErrorRow((NoEpisodesMatch,), "no_episodes", 3,
             "Record or label demonstrations, or widen the selection (--labels, --task, --store)."),
    ErrorRow((CameraMismatch,), "camera_mismatch", 3, lambda error: error.what_to_do),
    ErrorRow((CorruptEpisode,), "corrupt_episode", 3,
             "Check the store with `python run.py episodes check --deep`, recover or remove the file, --exclude it, "
             "or train on the others with --skip-unreadable."),
    ErrorRow((UnreadableEpisode,), "corrupt_episode", 3,
             "Check the store with `python run.py episodes check --deep`, then --exclude the file or start again "
             "with --skip-unreadable; --resume continues from the last checkpoint."),
    ErrorRow((EpisodeFormatError,), "corrupt_episode", 3,
             lambda error: f"{error.path.name} could not be read while training; check it with `python run.py "
                           f"episodes check {error.path}` and --exclude it or recover it."),
    ErrorRow((DataError,), "data", 3, "See the message."),
    ErrorRow((ModelError, CheckpointError), "model", 4, "See the message."),
    ErrorRow((FloatingPointError,), "diverged", 4,
             "Lower --lr (e.g. by 3x) and resume from the last checkpoint with --resume, or start again."),
)


def is_out_of_memory(error: BaseException) -> bool:
    """MemoryError, or torch's out-of-memory RuntimeErrors (CUDA's included) by their message."""
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def report_of(error: BaseException, batch_size: int | str) -> tuple[int, Event, dict[str, Any]]:
    """(exit code, event, fields) that report `error`. batch_size: the run's, for the advice
    after running out of memory ("?" when unknown)."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_CANCELLED, Event.CANCELLED, {
            "step": None, "checkpoint": None,
            "message": "stopped before training began; starting again skips what was done (a finished autoencoder, "
                       "the episodes already cached)"}
    for row in ERRORS:
        if isinstance(error, row.errors):
            what = row.what_to_do(error) if callable(row.what_to_do) else row.what_to_do
            return row.exit_code, Event.ERROR, {"kind": row.kind, "message": str(error), "what_to_do": what}
    if is_out_of_memory(error):
        return 5, Event.ERROR, {
            "kind": "out_of_memory", "message": f"out of memory: {str(error)[:300]}",
            "what_to_do": f"Lower --batch-size (now {batch_size}), switch on --grad-checkpointing, or use a smaller "
                          "--preset; then continue with --resume from the last checkpoint."}
    return 1, Event.ERROR, {
        "kind": "internal", "message": f"{type(error).__name__}: {str(error)[:500]}",
        "what_to_do": "This is a bug or an unexpected environment problem; the traceback is on stderr. "
                      "Continue with --resume once fixed."}


# ------------------------------------------------------------------------------------------------
# On a terminal
# ------------------------------------------------------------------------------------------------


def _figure(value: float | None) -> str:
    """A loss for people: 4 significant digits, "—" when not known (null in the JSON lines: a
    resumed run that had nothing left to train)."""
    return "—" if value is None else f"{value:.4g}"


class TrainingView:
    """`run.py train` on a terminal: the run state the window's panel shows (`RunState`), as a bar
    per stage with its time left and key figures, the notable events as lines, and a summary."""

    #: Shown by the bar (and its figures), not as lines.
    BAR_ONLY = (Event.STARTED, Event.PROGRESS, Event.AUTOENCODER, Event.CACHE)
    LEVELS = {"info": "info", "warning": "warning", "error": "error", "stderr": "note"}

    def __init__(self) -> None:
        self.state = RunState()
        self.figures = ""

    def show(self, name: str, fields: Mapping[str, Any]) -> Shown:
        line = self.state.feed_record({"event": name, **fields})
        event = Event.known(name)
        self._update_figures(event, fields)
        if event is Event.SUMMARY:
            return Shown(bar=self._bar(), summary=self._summary(fields))
        if event is Event.CANCELLED:
            rows = [("stopped at step", str(fields.get("step") if fields.get("step") is not None else "—")),
                    ("checkpoint", str(fields.get("checkpoint") or "none yet")), ("next", str(fields.get("message", "")))]
            return Shown(summary=Summary("Training stopped", rows, "warning"))
        if event is Event.ERROR:
            rows = [("what happened", str(fields.get("message", ""))), ("what to do", str(fields.get("what_to_do", "")))]
            return Shown(summary=Summary("Training failed", rows, "error"))
        lines = [] if line is None or event in self.BAR_ONLY else [Line(line.text, self.LEVELS.get(line.level, "info"))]
        return Shown(lines=lines, bar=self._bar())

    def _update_figures(self, event: Event | None, fields: Mapping[str, Any]) -> None:
        if event is Event.PROGRESS:
            loss = fields["loss"]
            self.figures = (f"loss {_figure(loss['total'])} · action {_figure(loss['action'])} · "
                            f"video {_figure(loss['video'])} · lr {fields.get('lr', 0):.2g} · "
                            f"{fields.get('samples_per_s', 0):.3g} samples/s")
        elif event is Event.AUTOENCODER:
            self.figures = f"loss {_figure(fields['loss'])} · {fields.get('samples_per_s', 0):.3g} samples/s"
        elif event is Event.CACHE:
            self.figures = str(fields.get("episode", ""))
        elif event is Event.STAGE:
            self.figures = ""

    def _bar(self) -> Bar | None:
        state = self.state
        if not state.stage:
            return None
        return Bar(STAGE_TEXT.get(state.stage, state.stage), state.stage_done, state.stage_total, state.eta_s,
                   self.figures)

    @staticmethod
    def _summary(s: Mapping[str, Any]) -> Summary:
        final = s.get("final_loss") or {}
        rows = [("steps", str(s.get("steps"))),
                ("final loss", f"{_figure(final.get('total'))} (action {_figure(final.get('action'))}, "
                               f"video {_figure(final.get('video'))})")]
        if s.get("best_val_action_loss") is not None:
            rows.append(("best validation", f"action loss {s['best_val_action_loss']:.4g} at step {s.get('best_step')}"))
        rows.append(("policy to run", str(s.get("best_checkpoint") or s.get("checkpoint"))))
        rows.append(("run folder", str(s.get("run_dir"))))
        speed = f", {s['samples_per_s']:.3g} samples/s" if s.get("samples_per_s") else ""
        rows.append(("time", f"{format_duration(s.get('elapsed_s'))}{speed}"))
        rows.append(("episodes", f"{s.get('train_episodes')} for training, {s.get('val_episodes')} for validation"))
        return Summary("Training finished", rows, "ok")


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------


def launch_rank() -> int:
    """This process's rank under torchrun (its RANK variable), 0 outside it."""
    return int(os.environ.get("RANK", "0"))


def main(argv: Sequence[str] | None = None) -> int:
    """`python run.py train ...`; returns the process exit code (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        build_parser().print_help()
        return 0
    # Ranks but the first report errors only: as JSON, so their terminals draw no empty bars.
    json_lines = True if "--json" in argv or launch_rank() != 0 else None
    with open_reporter(json_lines=json_lines, view=TrainingView()) as reporter:
        return _train(argv, reporter)


def _train(argv: list[str], reporter: Reporter) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, handlers=[reporter.log_handler()], format=LOG_FORMAT)
    events = RunEvents(lambda record: reporter.event(record["event"], **{k: v for k, v in record.items() if k != "event"}))
    trainer = None
    previous: dict[int, Any] = {}
    try:
        options = options_from_args(build_parser().parse_args(argv), argv)
        from model.trainer import Trainer  # torch loads here, once the flags are known to be good

        trainer = Trainer(options, events)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, trainer.request_cancel)
        return 0 if trainer.run() else EXIT_CANCELLED
    except BaseException as error:  # noqa: BLE001 - every failure becomes an event with what to do
        if isinstance(error, SystemExit):
            raise
        code, event, fields = report_of(error, trainer.hyper.batch_size if trainer else "?")
        if fields.get("kind") == "internal":
            log.exception("training failed")
        if events.run_dir is None and launch_rank() == 0 and not isinstance(error, OutputFolderError):
            # Failed before the trainer took its folder: a folder free for this start (e.g. the
            # one the window made and follows) still learns why; another run's folder, or one
            # that cannot be written, does not.
            out = out_arg(argv)
            if out and accepts_start(Path(out), resume="--resume" in argv):
                events.run_dir = Path(out)
        events(event, force=True, **fields)
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
