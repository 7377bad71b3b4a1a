"""The trainer: one Fast-WAM training run on recorded episodes, from a `TrainOptions`
(`model.train_options`) to a run folder (`model.run_folder`). `python run.py train` is its
command line (`app.studio.jobs.train`).

What a run does (each stage reports events, `model.run_folder.Event`):

1. select   episodes by label/task/list from store folders or files; split train/validation by
            episode (fixed by the file names); z-score statistics from the training episodes.
2. encoder  tiny/small: our causal video autoencoder is pretrained first and frozen
            (`model.autoencoder_stage`); kept in the run folder, reused by `--vae-from`.
            fastwam-5b: the Wan2.2 VAE from `--wan-vae-dir`.
3. cache    every episode's latents, encoded once and kept on disk (`model.latent_cache`),
            keyed by the episode's frames and the encoder's weights.
4. train    AdamW (0.9, 0.95), cosine schedule with linear warm-up, gradient clipping, bf16
            autocast on CUDA, optional gradient checkpointing; validation on held-out
            episodes; checkpoints every N steps and at the end; the best by validation in
            `best/`; a summary event at the end.

Determinism and resume: the samples of step s are a function of (seed, s) (`StepBatches`), and
so is every sample's noise and timestep (`sample_draws`). A resumed run therefore trains on
exactly the batches and noise an uninterrupted one would, and N processes under torchrun
together see exactly the single-process batch. The learning rate is a function of the step; the
optimizer state and the torch/numpy/python RNG states are saved with each checkpoint and restored.

Events: `RunEvents` hands each to the caller's report (the terminal or JSON lines on stdout)
and, from rank 0 once the run folder is taken, appends it to the folder's train.jsonl - so a run
started anywhere (a terminal, the window, torchrun on another machine) can be followed from its
folder. Cancel (`request_cancel`, e.g. on SIGTERM): the current step finishes, a checkpoint is
written, `cancelled` is reported and `run()` returns False; `--resume` continues.

Thread ownership: everything runs on the process's main thread; `request_cancel` may be called
from a signal handler.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from model import distributed as dist_utils
from model.autoencoder_stage import has_vae, load_autoencoder, pretrain_autoencoder, save_autoencoder
from model.checkpoint import (
    check_state_dict,
    load_checkpoint,
    load_released_checkpoint,
    load_wan_dit_into_video_expert,
    save_checkpoint,
)
from model.data import (
    CanvasSpec,
    EpisodeFilter,
    EpisodeSource,
    SampleStream,
    WindowDataset,
    WindowSpec,
    find_episodes,
    split_by_episode,
)
from model.compatibility import PolicyInputs
from model.config import check_fits_in_memory
from model.distributed import DistContext
from model.encoders import CausalVideoAutoencoder, PrecomputedTextEmbeddings, TaskEmbedding, WanVideoEncoder
from model.episode_inputs import training_inputs
from model.errors import OutputFolderError, RunFolderError, UnknownTask, UsageError
from model.json_lines import json_safe
from model.fastwam import FastWAM
from model.latent_cache import CanvasCache, FramesKeyMemo, LatentCache, encoder_key, prune_cache
from model.normalization import DEFAULT_STD_FLOOR, compute_norm_stats
from model.resume import ResumeChoice, ResumeState, check_resumable, prepare_output_folder, remove_partial_files
from model.run_folder import (
    AUTOENCODER_DIR,
    AUTOENCODER_WEIGHTS,
    BEST_DIR,
    BEST_STAGING_DIR,
    LATEST_FILE,
    MODEL_FILE,
    RUN_FILE,
    TRAINER_FILE,
    TRAINING_STATE_FILE,
    VALIDATION_FILE,
    Event,
    JobRecord,
    RunEvents,
    checkpoint_dir,
    latest_checkpoint,
    prune_checkpoints,
    replace_best,
    rounded,
    write_json,
)
from model.train_module import StepBatches, TrainModule, sample_draws
from model.train_options import TrainHyper, TrainOptions
from recordings.check_memo import DeepCheckMemo

log = logging.getLogger(__name__)

#: In the cache folder: the episodes that passed the deep check, by size, time and inode
#: (`recordings.check_memo`), so a start does not decode every frame again.
DEEP_CHECKS_FILE = "deep_checks.json"

class StateView:
    """Something with `state_dict()` for `save_checkpoint`: a slice of a (gathered) state dict."""

    def __init__(self, state: dict[str, torch.Tensor], prefix: str):
        self._state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


def _rng_states() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def _restore_rng(states: dict[str, Any], torch_state: torch.Tensor | None, cuda_states) -> None:
    n = states["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = states["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if torch_state is not None:
        torch.set_rng_state(torch_state)
    if cuda_states is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)


class Trainer:
    """One training run: `run()` returns True when every step is done, False when it was
    cancelled (after a checkpoint). Errors are raised (typed: `model.errors`). Owns the process's
    main thread."""

    def __init__(self, options: TrainOptions, emit: RunEvents):
        self.options = options
        self.emit = emit
        self.hyper = options.hyper
        self._cancel = threading.Event()

    # -- cancel -------------------------------------------------------------------------------
    def request_cancel(self, *_: Any) -> None:
        self._cancel.set()

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _cache_progress(self, progress: dict) -> None:
        """Report one cached episode; a cancel stops here, between episodes (each cache entry is
        written whole, so what was cached is kept for the next start)."""
        self.emit(Event.CACHE, **progress)
        if self.cancelled():
            raise KeyboardInterrupt

    # -- stages -------------------------------------------------------------------------------
    def run(self) -> bool:
        options, hyper = self.options, self.hyper
        ctx = self.ctx = dist_utils.init_distributed(None if options.device == "auto" else options.device)
        self.emit.ctx = ctx
        try:
            return self._run(ctx, options, hyper)
        finally:
            dist_utils.shutdown(ctx)

    def _run(self, ctx: DistContext, options: TrainOptions, hyper: TrainHyper) -> bool:
        started = time.monotonic()
        if options.threads > 0:
            torch.set_num_threads(options.threads)
        for flag, value in (("--init-from-fastwam", options.init_from_fastwam), ("--init-from-wan", options.init_from_wan),
                            ("--vae-from", options.vae_from)):
            if value and not Path(value).exists():
                raise UsageError(f"{flag} {value}: no such file or folder")
        if hyper.batch_size % ctx.world_size:
            raise UsageError(f"--batch-size {hyper.batch_size} must divide evenly over {ctx.world_size} processes")
        config = options.model_config()
        strategy = dist_utils.default_strategy(options.preset) if options.strategy == "auto" else options.strategy
        available, where = dist_utils.training_memory(ctx, strategy)
        check_fits_in_memory(config, available_bytes=available, where=where)  # before anything is built
        # Under torchrun every rank named the folder (a default one by its start time): rank 0's counts.
        run_dir = self.run_dir = Path(dist_utils.broadcast_object(ctx, str(options.out)))
        held = latest_checkpoint(run_dir)
        if held is not None and not options.resume:
            raise RunFolderError(f"{run_dir} already holds checkpoints (latest {held.name}); pass --resume to "
                                 "continue that run, or choose a new --out folder")
        self._take_folder(ctx, run_dir)
        # Chosen up front by the files' structure (quick), so a run with nothing to resume from
        # stops before minutes of data work; read whole once the model is there to take it.
        self.resume = ResumeChoice(run_dir, self._skip_checkpoint)
        resume_from = self.resume.newest_complete(held is not None) if options.resume else None
        random.seed(options.seed)
        np.random.seed(options.seed)
        torch.manual_seed(options.seed)

        # 1. Episodes, split, statistics, model config.
        canvas = CanvasSpec.from_config(config, dict(options.camera_map))
        window = WindowSpec.from_config(config)
        default_task = options.default_task or (config.encoder.tasks[0] if config.encoder.tasks else "")
        try:
            flt = EpisodeFilter(labels=options.labels, tasks=options.tasks, include=options.include,
                                exclude=options.exclude, control_sources=options.control_sources)
        except ValueError as error:
            raise UsageError(f"--labels/--control-sources: {error}") from None
        self.emit(Event.STAGE, stage="select", message="finding episodes" + (" and reading every frame once"
                                                                            if options.deep_check else ""))
        episodes = self._find_episodes(ctx, flt, default_task, canvas)
        self.inputs = self._inputs_of(episodes, canvas, config, default_task)
        train_eps, val_eps = split_by_episode(episodes, hyper.val_fraction)
        tasks = list(config.encoder.tasks)
        tasks += sorted({e.task for e in episodes} - set(tasks))
        if config.encoder.text == "learned":
            config = config.replace(encoder=dataclasses.replace(config.encoder, tasks=tuple(tasks)))
        std_floor = DEFAULT_STD_FLOOR if options.std_floor is None else options.std_floor
        norm = compute_norm_stats([e.path for e in train_eps], std_floor=std_floor)
        run_record = {
            "format": 1, "preset": options.preset, "config": config.to_dict(), "hyper": dataclasses.asdict(hyper),
            "seed": options.seed, "world_size": ctx.world_size, "tasks": tasks,
            "train": [str(e.path) for e in train_eps], "val": [str(e.path) for e in val_eps],
            "argv": list(options.argv), "camera_map": dict(canvas.camera_map), "inputs": self.inputs.to_dict(),
        }
        run_record = json_safe(run_record)  # tuples -> lists, as on disk
        if resume_from is not None:
            check_resumable(run_dir, run_record)
        elif options.resume:
            self.emit(Event.NOTE, message=f"--resume: {run_dir} has no checkpoint yet, so training starts from step 0")
        self.emit(Event.EPISODES, train=len(train_eps), val=len(val_eps), train_steps=sum(e.sample_count for e in train_eps),
                  val_steps=sum(e.sample_count for e in val_eps), tasks=tasks, variant=config.variant,
                  val_names=[e.name for e in val_eps])

        # 2. The video encoder (frozen from here on) and the text side.
        self.memo = FramesKeyMemo(Path(options.cache_dir))
        self.canvases = None
        video_encoder = self._video_encoder(ctx, config, options, hyper, run_dir, train_eps, canvas, window)
        text = self._text_side(config, options, tasks)

        # 3. Latents of every episode, each rank encoding its share.
        self.emit(Event.STAGE, stage="cache", message="encoding episodes (cached after the first time)")
        cache = LatentCache(options.cache_dir, encoder_key(video_encoder, canvas, window), self.memo)
        everything = list(train_eps) + list(val_eps)
        canvases = list(self.canvases) + [None] * len(val_eps) if self.canvases else None
        _, mine = cache.ensure(everything, video_encoder, canvas, window, ctx.device, share=(ctx.rank, ctx.world_size),
                               progress=self._cache_progress, canvases=canvases)
        dist_utils.barrier(ctx)
        entries, _ = cache.ensure(everything, video_encoder, canvas, window, ctx.device)
        built = int(dist_utils.all_reduce_sum(ctx, torch.tensor([float(mine.built)], device=ctx.device)).item())
        self.emit(Event.CACHE_READY, folder=str(cache.folder), built=built, hits=len(everything) - built,
                  seconds=round(mine.seconds, 1))
        if ctx.is_main and options.cache_max_gb > 0:
            in_use = [e.path for e in entries if e is not None]
            in_use += [c.path for c in (self.canvases or []) if c is not None]
            pruned = prune_cache(options.cache_dir, int(options.cache_max_gb * 1e9), in_use)
            if pruned.removed:
                self.emit(Event.CACHE_PRUNED, removed=pruned.removed, freed_gb=round(pruned.freed_bytes / 1e9, 3),
                          kept_gb=round(pruned.kept_bytes / 1e9, 3), max_gb=options.cache_max_gb)
        task_index = {t: i for i, t in enumerate(tasks)}
        sources = [EpisodeSource(info, task_index[info.task], entry) for info, entry in zip(everything, entries)]
        train_ds = WindowDataset(sources[: len(train_eps)], window, norm_stats=norm, mode="latents")
        val_ds = WindowDataset(sources[len(train_eps):], window, norm_stats=norm, mode="latents") if val_eps else None

        # 4. The network, its initialisation, the optimizer, and the resume state.
        torch.manual_seed(options.seed)  # the same initial weights whatever ran before (e.g. stage 1 on rank 0)
        fastwam = FastWAM(config)
        self._initialise(fastwam, options, config, text, tasks)
        fastwam.gradient_checkpointing = hyper.grad_checkpointing
        module = TrainModule(fastwam, tasks, text).to(ctx.device)
        start_step, best = 0, {"val_action_loss": None, "step": None}
        resumed: ResumeState | None = None
        if resume_from is not None:
            resumed = self.resume.read()
            resume_from = resumed.folder
            start_step, best = resumed.step, resumed.best
            self._load_weights(module, resumed)
        self.resumed_from = resume_from
        use_bf16 = options.precision == "bf16" or (options.precision == "auto" and ctx.device.type == "cuda")
        if use_bf16 and ctx.device.type != "cuda":
            raise UsageError("--precision bf16 needs a CUDA GPU (bf16 on this CPU is slower than fp32); use --precision fp32")
        wrapped = dist_utils.wrap_model(module, ctx, strategy, find_unused_parameters=(config.variant == "no_video_cotraining"),
                                        bf16=use_bf16 and strategy == "fsdp")
        optimizer = self._optimizer(wrapped, hyper)
        if resumed is not None:
            dist_utils.load_optimizer_state(wrapped, optimizer, resumed.training_state["optimizer"])
            _restore_rng(resumed.rng, resumed.training_state.get("torch_rng"), resumed.training_state.get("cuda_rng"))
            self.emit(Event.RESUMED, step=start_step, checkpoint=str(resume_from))
            resumed = None  # the tensors now live in the module and the optimizer
        if ctx.is_main:
            write_json(run_dir / RUN_FILE, run_record)

        return self._train_loop(ctx, wrapped, module, optimizer, config, hyper, norm, video_encoder, train_ds, val_ds,
                                run_dir, start_step, best, use_bf16, started, tasks)

    # -- stage helpers --------------------------------------------------------------------------
    def _inputs_of(self, episodes, canvas: CanvasSpec, config, default_task: str) -> PolicyInputs:
        """What the checkpoints will record they were trained on; the warnings that go with it."""
        inputs, notices = training_inputs([e.path for e in episodes], [e.task_given for e in episodes],
                                          tuple(zip(canvas.cameras, canvas.source_cameras)), config, default_task,
                                          default_task_chosen=bool(self.options.default_task))
        for level, kind, message in notices:
            self.emit(Event.WARNING if level == "warning" else Event.NOTE, kind=kind, message=message)
        return inputs

    def _take_folder(self, ctx: DistContext, run_dir: Path) -> None:
        """From here on the run is this folder's: rank 0 proves it writable (a read-only --out is
        the user's to fix, said before any work), clears what interrupted saves left, records its
        process in job.json (so the window can tell it lives, and cancel it) and every event in
        train.jsonl."""
        refused, removed = None, []
        if ctx.is_main:
            try:
                prepare_output_folder(run_dir, "--out")
            except OutputFolderError as error:
                refused = (error.path, error.flag, error.reason)
        refused = dist_utils.broadcast_object(ctx, refused)  # every rank stops with rank 0's reason
        if refused is not None:
            raise OutputFolderError(*refused)
        if ctx.is_main:
            removed = remove_partial_files(run_dir)
            JobRecord.of_this_process(self.options.program + self.options.argv).save(run_dir)
            self.emit.run_dir = run_dir
        self.emit(Event.STARTED, time=round(time.time(), 3), pid=os.getpid(), host=socket.gethostname(),
                  world_size=ctx.world_size, resume=self.options.resume)
        if removed:
            self.emit(Event.NOTE, message=f"removed {len(removed)} temporary file(s) left by an interrupted save: "
                                          + ", ".join(str(p.relative_to(run_dir)) for p in removed[:5]))

    def _find_episodes(self, ctx: DistContext, flt: EpisodeFilter, default_task: str, canvas: CanvasSpec):
        """The selected episodes, each read whole and every frame decoded once (remembered in the
        cache folder for files that did not change), so a damaged frame stops the run here and
        not an hour in. Under torchrun rank 0 checks first and the others find its results in
        the memo."""
        options = self.options

        def skipped(path: Path, reason: str) -> None:
            self.emit(Event.WARNING, kind="unreadable_episode", path=str(path),
                      message=f"left out {path.name} (--skip-unreadable): {reason}")

        def find():
            memo = DeepCheckMemo(Path(options.cache_dir) / DEEP_CHECKS_FILE) if options.deep_check else None
            return find_episodes(list(options.store), flt, default_task, canvas=canvas, deep=options.deep_check,
                                 skip_unreadable=options.skip_unreadable, on_skip=skipped, check_memo=memo)

        return dist_utils.main_rank_first(ctx, find)

    def _skip_checkpoint(self, folder: Path, reason: str) -> None:
        self.emit(Event.WARNING, kind="damaged_checkpoint", path=str(folder),
                  message=f"checkpoint {folder.name} cannot be resumed from ({reason}); trying an earlier one")

    def _video_encoder(self, ctx, config, options, hyper, run_dir, train_eps, canvas, window) -> nn.Module:
        if config.encoder.vae == "wan2.2":
            if not options.wan_vae_dir:
                raise UsageError("the fastwam-5b preset encodes frames with the Wan2.2 VAE: pass --wan-vae-dir "
                                 "(the local Wan2.2-TI2V-5B folder)")
            return WanVideoEncoder.from_pretrained(options.wan_vae_dir, device=ctx.device)
        folder = run_dir / AUTOENCODER_DIR
        if (folder / AUTOENCODER_WEIGHTS).is_file():
            vae = load_autoencoder(folder, config)
            self.emit(Event.AUTOENCODER_READY, source=str(folder), trained=False)
        elif options.vae_from:
            vae = load_autoencoder(options.vae_from, config)
            self.emit(Event.AUTOENCODER_READY, source=str(options.vae_from), trained=False)
        elif options.init_from_fastwam and Path(options.init_from_fastwam).is_dir() and has_vae(options.init_from_fastwam):
            vae = load_autoencoder(options.init_from_fastwam, config)
            self.emit(Event.AUTOENCODER_READY, source=str(options.init_from_fastwam), trained=False)
        else:
            if hyper.vae_steps < 1:
                raise UsageError("this preset's autoencoder must be trained first: set --vae-steps (e.g. 600) or "
                                 "reuse one with --vae-from RUN_FOLDER")
            # Canvases decoded once for the autoencoder's many clips (each rank decodes its share).
            self.emit(Event.STAGE, stage="canvases", message="decoding the training episodes' frames once")
            canvas_cache = CanvasCache(options.cache_dir, canvas, self.memo)
            canvas_cache.ensure(train_eps, share=(ctx.rank, ctx.world_size), progress=self._cache_progress)
            dist_utils.barrier(ctx)
            self.canvases, _ = canvas_cache.ensure(train_eps)
            if ctx.is_main:
                self.emit(Event.STAGE, stage="autoencoder", message=f"pretraining the video autoencoder ({hyper.vae_steps} steps)")
                torch.manual_seed(options.seed + 1)
                vae = CausalVideoAutoencoder(config.video.in_dim, config.encoder.vae_channels)
                workers = self._workers(ctx)
                meta = pretrain_autoencoder(vae, train_eps, self.canvases, canvas, window, hyper, options.seed, ctx.device,
                                            workers, self.emit, self.cancelled)
                save_autoencoder(folder, vae.cpu(), meta)
                self.emit(Event.AUTOENCODER_READY, source=str(folder), trained=True, loss=rounded(meta["final_loss"]),
                          seconds=meta["seconds"])
            dist_utils.barrier(ctx)
            vae = load_autoencoder(folder, config)
        return vae.to(ctx.device).eval().requires_grad_(False)

    def _text_side(self, config, options, tasks):
        if config.encoder.text == "learned":
            torch.manual_seed(options.seed + 2)
            return TaskEmbedding(tasks, config.encoder.tokens_per_task, config.text_dim)
        if not options.text_embeddings:
            raise UsageError("the fastwam-5b preset reads precomputed umT5 task embeddings: pass --text-embeddings FILE")
        table = PrecomputedTextEmbeddings.load(options.text_embeddings)
        missing = [t for t in tasks if t not in table.table]
        if missing:
            raise UnknownTask(missing[0], sorted(table.table), "Precompute the umT5 embedding of every task in the "
                              "episodes and add it to the --text-embeddings file.")
        return table

    def _initialise(self, fastwam: FastWAM, options, config, text, tasks) -> None:
        if options.init_from_fastwam:
            path = Path(options.init_from_fastwam)
            if path.is_dir():
                loaded = load_checkpoint(path)
                check_state_dict(path, fastwam.state_dict(), loaded.model.state_dict(), f"a {config.name} Fast-WAM")
                fastwam.load_state_dict(loaded.model.state_dict())
                emb = loaded.extra_state.get("task_embedding")
                if emb is not None and isinstance(text, TaskEmbedding):
                    # Rows by task name: tasks new to this run keep their fresh init.
                    with torch.no_grad():
                        old = emb["embedding.weight"]
                        for i, task in enumerate(loaded.config.encoder.tasks):
                            if task in tasks and old.shape[1] == text.embedding.weight.shape[1]:
                                text.embedding.weight[tasks.index(task)] = old[i]
            else:
                released, _ = load_released_checkpoint(path, config)
                fastwam.load_state_dict(released.state_dict())
            self.emit(Event.INITIALISED, source=str(path), kind="fastwam")
        elif options.init_from_wan:
            load_wan_dit_into_video_expert(fastwam, options.init_from_wan)
            self.emit(Event.INITIALISED, source=str(options.init_from_wan), kind="wan2.2")

    def _load_weights(self, module: TrainModule, resumed: ResumeState) -> None:
        tensors = resumed.tensors
        state = {f"fastwam.{k}": v for k, v in tensors.items() if k.split(".", 1)[0] in ("mot", "proprio_encoder")}
        if module.task_embedding is not None:
            state.update({f"task_embedding.{k[len('task_embedding.'):]}": v for k, v in tensors.items()
                          if k.startswith("task_embedding.")})
        check_state_dict(resumed.folder / MODEL_FILE, module.state_dict(), state, "this run's model")
        module.load_state_dict(state)

    def _optimizer(self, wrapped: nn.Module, hyper: TrainHyper) -> torch.optim.Optimizer:
        # No decay on gains, biases and the (1, 6, D) modulation tables' siblings of rank < 2.
        decay, no_decay = [], []
        for name, param in wrapped.named_parameters():
            if not param.requires_grad:
                continue
            (decay if param.ndim >= 2 and "modulation" not in name else no_decay).append(param)
        groups = [{"params": decay, "weight_decay": hyper.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=hyper.lr, betas=(0.9, 0.95), eps=1e-8)

    def _workers(self, ctx: DistContext) -> int:
        if self.options.workers is not None:
            return self.options.workers
        # CPU: cached latents and canvases load in microseconds (memory-mapped), and worker
        # processes would only take cores from the model (benchmarks/loader.py). GPU: load ahead.
        return 4 if ctx.device.type == "cuda" else 0

    # -- the loop -----------------------------------------------------------------------------
    def _train_loop(self, ctx, wrapped, module, optimizer, config, hyper, norm, video_encoder, train_ds, val_ds,
                    run_dir, start_step, best, use_bf16, started, tasks) -> bool:
        options = self.options
        stream = SampleStream(len(train_ds), options.seed)
        stop_step = hyper.steps if options.stop_after_steps is None else min(hyper.steps, options.stop_after_steps)
        workers = self._workers(ctx)
        loader = torch.utils.data.DataLoader(
            train_ds, batch_sampler=StepBatches(stream, start_step, stop_step, hyper.batch_size, ctx),
            num_workers=workers, pin_memory=ctx.device.type == "cuda", persistent_workers=False,
            prefetch_factor=4 if workers else None,
        )
        per_rank = hyper.batch_size // ctx.world_size
        latent_shape = (config.video.in_dim, config.latent_frames, *config.latent_hw)
        action_shape = (config.action_horizon, config.action_dim)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
        extra = {"vae": video_encoder} if isinstance(video_encoder, CausalVideoAutoencoder) else {}
        self.emit(Event.STAGE, stage="train", message=f"training steps {start_step}..{hyper.steps}", steps=hyper.steps,
                  batch_size=hyper.batch_size, world_size=ctx.world_size, device=str(ctx.device),
                  precision="bf16" if use_bf16 else "fp32", start_step=start_step)

        window = torch.zeros(3, dtype=torch.float64)
        window_steps, window_start = 0, time.monotonic()
        step_times: list[float] = []
        last_loss = [float("nan")] * 3
        step = start_step
        wrapped.train()
        cancelled = False
        last_saved: Path | None = None
        for step, batch in enumerate(loader, start=start_step):
            t0 = time.monotonic()
            positions = range(ctx.rank * per_rank, (ctx.rank + 1) * per_rank)
            draws = sample_draws(config, options.seed, step, positions, latent_shape, action_shape)
            inputs = {k: v.to(ctx.device, non_blocking=True) for k, v in batch.items()}
            draws = {k: v.to(ctx.device) for k, v in draws.items()}
            lr = hyper.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast:
                losses = wrapped(inputs["latents"], inputs["proprio"], inputs["action"], inputs["action_is_pad"],
                                 inputs["image_is_pad"], inputs["task"], **draws)
            if not torch.isfinite(losses[0]):
                raise FloatingPointError(f"the loss became {losses[0].item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            losses[0].backward()
            # Under FSDP the gradients are DTensors and the norm is taken over all shards.
            torch.nn.utils.clip_grad_norm_(wrapped.parameters(), hyper.grad_clip)
            optimizer.step()
            window += losses.detach().double().cpu()
            window_steps += 1
            done = step + 1
            step_times.append(time.monotonic() - t0)

            if done % hyper.log_every == 0 or done == stop_step:
                mean = dist_utils.all_reduce_mean(ctx, window.to(ctx.device)).cpu() / window_steps
                elapsed = time.monotonic() - window_start
                rate = window_steps * hyper.batch_size / max(elapsed, 1e-9)
                recent = np.mean(step_times[-50:])
                last_loss = mean.tolist()
                self.emit(Event.PROGRESS, step=done, steps=hyper.steps, epoch=rounded(stream.epoch_of(done, hyper.batch_size), 4),
                          loss={"total": rounded(last_loss[0]), "video": rounded(last_loss[1]), "action": rounded(last_loss[2])},
                          lr=rounded(lr), samples_per_s=rounded(rate, 4), eta_s=round((hyper.steps - done) * recent, 1),
                          elapsed_s=round(time.monotonic() - started, 1))
                window.zero_()
                window_steps, window_start = 0, time.monotonic()

            val_now = val_ds is not None and (done % hyper.val_every == 0 or done == hyper.steps)
            if val_now:
                val = self._validate(ctx, wrapped, config, val_ds, hyper, per_rank, latent_shape, action_shape, autocast)
                is_best = self._improves(best, val)
                if is_best:
                    best = {"val_action_loss": val[2], "step": done}
                    self._save_best(ctx, wrapped, config, norm, done, extra, val)
                self.emit(Event.VALIDATION, step=done, val_loss={"total": rounded(val[0]), "video": rounded(val[1]), "action": rounded(val[2])},
                          best=is_best, best_step=best["step"])
                wrapped.train()

            cancelled = dist_utils.any_rank(ctx, self.cancelled()) or (options.stop_after_steps is not None and done >= stop_step
                                                                        and done < hyper.steps)
            if done % hyper.checkpoint_every == 0 or done == hyper.steps or cancelled:
                last_saved = self._save(ctx, wrapped, optimizer, config, norm, done, extra, best, run_dir, hyper)
                self.emit(Event.CHECKPOINT, step=done, path=str(last_saved))
            if cancelled:
                break

        if cancelled:
            self.emit(Event.CANCELLED, step=step + 1, checkpoint=str(last_saved),
                      message="stopped; continue with the same command plus --resume")
            return False
        if start_step >= hyper.steps:
            last_saved = self.resumed_from  # nothing was left to train: the run ends where it was
        self.emit(Event.SUMMARY, steps=hyper.steps, final_loss={"total": rounded(last_loss[0]), "video": rounded(last_loss[1]),
                                                            "action": rounded(last_loss[2])},
                  best_val_action_loss=None if best["val_action_loss"] is None else rounded(best["val_action_loss"]),
                  best_step=best["step"], checkpoint=str(last_saved),
                  best_checkpoint=str(run_dir / BEST_DIR) if best["step"] is not None else None,
                  run_dir=str(run_dir), elapsed_s=round(time.monotonic() - started, 1),
                  train_step_s=rounded(float(np.median(step_times)), 4) if step_times else None,
                  samples_per_s=rounded(hyper.batch_size / float(np.median(step_times)), 4) if step_times else None,
                  train_episodes=len(train_ds.sources), val_episodes=len(val_ds.sources) if val_ds else 0, tasks=tasks)
        return True

    @torch.no_grad()
    def _validate(self, ctx, wrapped, config, val_ds, hyper, per_rank, latent_shape, action_shape, autocast) -> list[float]:
        """Mean (total, video, action) loss over a fixed set of validation windows with fixed noise,
        so values are comparable from one validation to the next. The windows are spread evenly
        over the validation episodes and trimmed to a multiple of the process count, so every rank
        runs the same batches (FSDP gathers parameters in each forward)."""
        wrapped.eval()
        n = len(val_ds)
        picks = np.unique(np.linspace(0, n - 1, num=min(n, hyper.val_samples)).astype(np.int64))
        count = max(1, len(picks) // ctx.world_size)
        picks = np.resize(picks, count * ctx.world_size)  # (repeats only when fewer windows than ranks)
        mine = picks[ctx.rank * count : (ctx.rank + 1) * count]
        sums = torch.zeros(4, dtype=torch.float64)
        for start in range(0, count, per_rank):
            idx = [int(i) for i in mine[start : start + per_rank]]
            batch = torch.utils.data.default_collate([val_ds[i] for i in idx])
            draws = sample_draws(config, self.options.seed, -1, idx, latent_shape, action_shape)
            inputs = {k: v.to(ctx.device) for k, v in batch.items()}
            with autocast:
                losses = wrapped(inputs["latents"], inputs["proprio"], inputs["action"], inputs["action_is_pad"],
                                 inputs["image_is_pad"], inputs["task"], **{k: v.to(ctx.device) for k, v in draws.items()})
            sums[:3] += losses.double().cpu() * len(idx)  # batch mean x samples = sum
            sums[3] += len(idx)
        total = dist_utils.all_reduce_sum(ctx, sums.to(ctx.device)).cpu()
        return (total[:3] / total[3].clamp(min=1)).tolist()

    def _gather(self, ctx, wrapped) -> dict[str, torch.Tensor] | None:
        return dist_utils.full_state_dict(wrapped, ctx)

    @staticmethod
    def _improves(best: dict[str, Any], val: list[float]) -> bool:
        """The rule for best/: a lower validation action loss than the best so far. (What
        `best` records - {"val_action_loss", "step"} - goes into trainer.json and the summary.)"""
        return best["val_action_loss"] is None or val[2] < best["val_action_loss"]

    @staticmethod
    def _write_weights(folder: Path, state: dict[str, torch.Tensor], extra: dict[str, nn.Module], config,
                       norm, step: int, inputs: PolicyInputs) -> None:
        """Our checkpoint format from a gathered TrainModule state: the network, the frozen
        encoder (tiny/small), the learned task embedding when there is one, and the inputs."""
        modules = dict(extra)
        text = StateView(state, "task_embedding.")
        if text.state_dict():
            modules["task_embedding"] = text
        save_checkpoint(folder, StateView(state, "fastwam."), config, norm, step, modules, inputs=inputs.to_dict())

    def _save_best(self, ctx, wrapped, config, norm, step, extra, val) -> None:
        state = self._gather(ctx, wrapped)
        if ctx.is_main:
            staged = self.run_dir / BEST_STAGING_DIR
            shutil.rmtree(staged, ignore_errors=True)
            self._write_weights(staged, state, extra, config, norm, step, self.inputs)
            write_json(staged / VALIDATION_FILE,
                       {"step": step, "val_loss": {"total": val[0], "video": val[1], "action": val[2]}})
            replace_best(self.run_dir, staged)
        dist_utils.barrier(ctx)

    def _save(self, ctx, wrapped, optimizer, config, norm, step, extra, best, run_dir: Path, hyper: TrainHyper) -> Path:
        """A full checkpoint (weights, optimizer, RNG, best-so-far) written by rank 0; every rank
        takes part in gathering. trainer.json is written last: it marks the folder complete."""
        state = self._gather(ctx, wrapped)
        opt_state = dist_utils.optimizer_state(wrapped, optimizer, ctx)
        folder = checkpoint_dir(run_dir, step)
        if ctx.is_main:
            (folder / TRAINER_FILE).unlink(missing_ok=True)
            self._write_weights(folder, state, extra, config, norm, step, self.inputs)
            payload = {"optimizer": opt_state, "torch_rng": torch.get_rng_state()}
            if torch.cuda.is_available():
                payload["cuda_rng"] = torch.cuda.get_rng_state_all()
            tmp = folder / f".{TRAINING_STATE_FILE}.tmp"
            torch.save(payload, tmp)
            os.replace(tmp, folder / TRAINING_STATE_FILE)
            write_json(folder / TRAINER_FILE, {"format": 1, "step": step, "seed": self.options.seed, "best": best,
                                               "rng": _rng_states(), "world_size": ctx.world_size,
                                               "global_batch": hyper.batch_size})
            write_json(run_dir / LATEST_FILE, {"step": step, "path": str(folder.relative_to(run_dir))})
            prune_checkpoints(run_dir, hyper.keep_checkpoints)
        dist_utils.barrier(ctx)
        return folder
