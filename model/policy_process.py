"""A policy served by a process of its own: the policy runner's choice when the model's Python
work would disturb the control loop through the GIL (see `model.runner`).

    policy = PolicyProcess(checkpoint_dir, device="cpu", threads=1)   # spawns, loads, waits
    runner = PolicyRunner(policy, strategy, limits)                   # runs it through the process
    runner.close()                                                    # stops the process

Exchange: observations go in through shared memory (one block per camera, written by the control
thread with a single copy, re-made only when a frame size changes) plus a small pickled header
(qpos, times, the RTC guide) on a pipe; chunks come back on the same pipe (H x 14 floats and the
stage timings). One request is in flight at a time (the runner's engine sees to that), so the
child reads a block before the parent writes it again.

Threads and processes: the parent side (`submit`, `poll`) belongs to the control thread, `close`
to the owner; the child runs `_serve` alone: it sets its torch threads, loads the checkpoint and
answers requests until told to stop or its parent goes away.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path
from typing import Mapping

import numpy as np

from model.errors import ModelError, PolicyFault

log = logging.getLogger(__name__)

#: How long the child may take to import torch and load the checkpoint (the 5B preset reads
#: 12 GB of weights).
START_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class _Config:
    """The parts of the model's config the runner reads (`config.action_horizon`)."""

    action_horizon: int
    action_dim: int
    variant: str
    name: str


class PolicyProcess:
    """The parent's handle on a policy process. `config` and `device` describe what it loaded."""

    def __init__(self, checkpoint: str | Path, device: str | None = None, seed: int = 0, threads: int | None = None,
                 cpu_affinity: tuple[int, ...] | None = None, nice: int = 0,
                 camera_map: Mapping[str, str] | None = None) -> None:
        """camera_map: view -> the observation camera it reads (None: the checkpoint's own map,
        as `FastWAMPolicy.from_checkpoint`); nice: added to the child's niceness (Linux): on a machine short of cores the control
        loop's process then gets the CPU first; in a process of its own the model can be made to
        yield without the priority inversion a low-priority thread holding the GIL would cause."""
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads and a GL context
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, name="policy-runner", daemon=True,
                                        args=(child, str(checkpoint), device, seed, threads, cpu_affinity, nice,
                                              None if camera_map is None else dict(camera_map)))
        self._process.start()
        child.close()
        self._blocks: dict[str, shared_memory.SharedMemory] = {}
        if not self._conn.poll(START_TIMEOUT_S):
            self.close()
            raise ModelError(f"the policy process did not load {checkpoint} within {START_TIMEOUT_S:.0f} s")
        try:
            kind, payload = self._conn.recv()
        except EOFError:
            self.close()
            raise ModelError(f"the policy process ended while loading {checkpoint}; see the log") from None
        if kind == "error":
            self.close()
            raise ModelError(payload)
        self.config = _Config(**payload["config"])
        self.device = payload["device"]

    # -- control thread ----------------------------------------------------------------------------
    def submit(self, request) -> None:
        """Hand a `model.runner._Request` to the child (one copy per camera, one small message)."""
        obs = request.observation
        layout = {}
        for camera, image in obs.images.items():
            image = np.asarray(image)
            block = self._blocks.get(camera)
            if block is None or block.size != image.nbytes:
                if block is not None:
                    block.close()
                    block.unlink()
                block = self._blocks[camera] = shared_memory.SharedMemory(create=True, size=image.nbytes)
            np.ndarray(image.shape, image.dtype, buffer=block.buf)[...] = image
            layout[camera] = (block.name, image.shape, image.dtype.str)
        guide = request.guide
        self._conn.send(("predict", {
            "index": request.index, "reset": request.reset, "qpos": np.asarray(obs.qpos, np.float32),
            "images": layout, "image_times_s": dict(obs.image_times_s), "time_s": float(obs.time_s), "task": obs.task,
            "guide": None if guide is None else (guide.prefix, guide.weights, guide.delay_ticks, guide.max_guidance),
        }))

    def poll(self):
        """The child's answer if it has one: ("chunk", actions, encode_s, action_s, total_s) or
        ("fault", cause, message, what_to_do); raises PolicyFault when the child has died."""
        try:
            if not self._conn.poll():
                return None
            return self._conn.recv()
        except (EOFError, OSError):
            raise PolicyFault("policy_error", "The policy process ended unexpectedly.",
                              "Load the checkpoint again; if it repeats, see the log (out of memory?).") from None

    # -- owner ---------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the child and free the shared memory."""
        try:
            self._conn.send(("stop", None))
        except (OSError, ValueError):
            pass
        self._process.join(timeout=10.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5.0)
        for block in self._blocks.values():
            block.close()
            block.unlink()
        self._blocks = {}
        self._conn.close()


def _serve(conn, checkpoint: str, device, seed: int, threads, cpu_affinity, nice: int, camera_map) -> None:
    """The child: load the policy, then answer requests until told to stop."""
    from model.execution import Guide
    from model.policy import FastWAMPolicy
    from model.inference_engines import default_threads, set_torch_threads
    from robot.types import Observation

    try:
        set_torch_threads(threads or default_threads())
        if cpu_affinity:
            os.sched_setaffinity(0, set(cpu_affinity))
        if nice > 0:
            os.nice(nice)
        policy = FastWAMPolicy.from_checkpoint(checkpoint, device=device, seed=seed)
        if camera_map is not None:
            policy.camera_map = camera_map
    except Exception as exc:  # the parent shows it; nothing else can
        conn.send(("error", f"the policy process could not load {checkpoint}: {type(exc).__name__}: {exc}"))
        return
    cfg = policy.config
    conn.send(("ready", {"config": {"action_horizon": cfg.action_horizon, "action_dim": cfg.action_dim,
                                    "variant": cfg.variant, "name": cfg.name}, "device": policy.device.type}))
    blocks: dict[str, shared_memory.SharedMemory] = {}
    while True:
        try:
            kind, message = conn.recv()
        except (EOFError, OSError):
            return  # the parent went away
        if kind == "stop":
            break
        images = {}
        for camera, (name, shape, dtype) in message["images"].items():
            block = blocks.get(camera)
            if block is None or block.name != name:
                if block is not None:
                    block.close()
                # Attaching registers the block with the resource tracker this spawned child shares
                # with its parent, a second time (a no-op: the parent's unlink removes it).
                block = blocks[camera] = shared_memory.SharedMemory(name=name)
            images[camera] = np.ndarray(shape, np.dtype(dtype), buffer=block.buf).copy()
        observation = Observation(message["qpos"], np.zeros(14, np.float32), np.zeros(14, np.float32), images,
                                  message["image_times_s"], message["time_s"], message["task"])
        guide = None if message["guide"] is None else Guide(*message["guide"])
        try:
            if message["reset"]:
                policy.reset()
            chunk = policy.predict(observation, guide=guide)
            conn.send(("chunk", chunk.actions, chunk.encode_s, chunk.action_s, chunk.total_s))
        except Exception as exc:  # a failure of the model is the parent's fault to show
            log.exception("the policy failed on chunk %d", message["index"])
            conn.send(("fault", type(exc).__name__, str(exc)))
    for block in blocks.values():
        block.close()
