"""Fuzz: randomly damaged copies of real episodes through `episodes list`, `episodes check --deep`
and the training data loader. Prints one JSON line per damage kind and a summary line.

    .venv/bin/python benchmarks/fuzz_episodes.py [--files 1000] [--seed 0] [--timeout-s 60]

Real episodes: written by the real `EpisodeWriter` (JPEG with three cameras; raw pixels; one
camera with a label edited twice, so both label slots are in use), from camera-like frames.

Each case is a store holding an intact copy of the episode and a damaged copy (byte flips anywhere, a
truncation, flips in the first 4 KiB where the superblock and root object header live, a zeroed
block). A long-lived worker process runs the three readers on it; the parent gives each case
`--timeout-s` and restarts the worker after a crash (a signal, an exception escaping a public
API) or a hang.

Counted per case:
- crash: the readers' worker died, or something other than the documented typed errors escaped
  (the harmlessness oracle runs in a process of its own: HDF5 itself can crash while visiting a
  damaged file, which the studio's readers never do; those are counted as `oracle_failed`);
- hang: no answer within the timeout;
- harmless: the damaged copy reads back identical to the original (every dataset's bytes, the
  attributes, the label): the flip hit unused space, there is nothing to name;
- named: for a copy that is not harmless, `check --deep` fails it (or warns about it) and the
  loader leaves it out or stops naming it; `list` is counted separately (it reads no frames,
  so it cannot see a damaged frame);
- missed: a copy that is not harmless and that `check --deep` or the loader passed as good.
Aim: crashes 0, hangs 0, missed 0. With `--without-checksums` the episodes are in the format
written before this studio checksummed its files: crashes and hangs must still be 0, but a byte
changed inside a JPEG or a text attribute cannot be told from a real one, so `missed` counts
what no reader can detect in such files.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KINDS = ("flip", "truncate", "header", "zero_block")
CAMERAS3 = ("cam_high", "cam_left_wrist", "cam_right_wrist")


# ------------------------------------------------------------------------------------------------
# Real episodes to damage
# ------------------------------------------------------------------------------------------------


def _ticks(n: int, cameras: tuple[str, ...], shape: tuple[int, int], seed: int):
    from robot.types import STATE_DIM, ControlSource, Mode, Observation, TickRecord, TickTimings

    rng = np.random.default_rng(seed)
    height, width = shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(n):
        images = {}
        for k, camera in enumerate(cameras):
            phase = 0.3 * i + k
            image = np.stack(
                [127 + 100 * np.sin(x / 7 + phase), 127 + 100 * np.cos(y / 5 - phase), 127 + 50 * np.sin((x + y) / 11)], -1
            ) + rng.normal(0, 4, (height, width, 3))
            images[camera] = np.clip(image, 0, 255).astype(np.uint8)
        t = 10.0 + 0.02 * i
        obs = Observation(
            qpos=rng.standard_normal(STATE_DIM).astype(np.float32),
            qvel=rng.standard_normal(STATE_DIM).astype(np.float32),
            effort=rng.standard_normal(STATE_DIM).astype(np.float32),
            images=images,
            image_times_s={c: t - 0.004 for c in cameras},
            time_s=t,
        )
        yield TickRecord(i, obs, rng.standard_normal(STATE_DIM).astype(np.float32), ControlSource.TELEOP, Mode.TELEOP,
                         TickTimings(0.02, 0.0, 0.001, 0.001, 0.0, 0.001, 0.003))


def _record(store: Path, cameras, shape, n, image_format, label, seed) -> Path:
    from recordings.metadata import EpisodeMetadata
    from recordings.writer import EpisodeWriter

    writer = EpisodeWriter(store, cameras, EpisodeMetadata(task="fold the towel", operator="fuzz"),
                           image_format=image_format, flush_interval_s=0.2)
    writer.start()
    for record in _ticks(n, cameras, shape, seed):
        writer.on_tick(record)
        while writer.status().queue_depth > 20:
            time.sleep(0.002)
    return writer.stop(label)


def without_checksums(path: Path) -> None:
    """Rewrite an episode as the studio wrote them before the checksums (and as other tools
    write theirs): no Fletcher-32, text attributes in the global heap, HDF5's oldest format."""
    import h5py

    plain = path.with_name(path.name + ".plain")
    with h5py.File(path, "r") as src, h5py.File(plain, "w") as dst:
        for name, value in src.attrs.items():
            if isinstance(value, bytes):
                value = value.decode("utf-8")
            elif isinstance(value, np.ndarray) and value.dtype.kind == "S":
                value = [item.decode("utf-8") for item in value]
            dst.attrs[name] = value

        def copy(name, item):
            if isinstance(item, h5py.Dataset):
                # Contiguous like ALOHA's own files; the label record stays where labels expect it.
                dst.create_dataset(name, data=item[()])
        src.visititems(copy)
    os.replace(plain, path)


def make_bases(folder: Path, checksums: bool = True) -> list[dict]:
    """Three real episodes and what the loader needs to read each."""
    from recordings.store import set_label

    folder.mkdir(parents=True, exist_ok=True)
    jpeg = _record(folder / "jpeg", CAMERAS3, (48, 64), 40, "jpeg", "success", 1)
    raw = _record(folder / "raw", CAMERAS3, (24, 32), 24, "raw", "failure", 2)
    single = _record(folder / "single", ("top",), (60, 80), 30, "jpeg", "unknown", 3)
    set_label(single, "failure", notes="towel slipped", reason="grasp missed")
    set_label(single, "success", notes="fine after all")  # both label slots now hold a state
    if not checksums:
        for path in (jpeg, raw, single):
            without_checksums(path)
    top = {c: "top" for c in CAMERAS3}
    return [
        {"path": str(jpeg), "camera_map": {}},
        {"path": str(raw), "camera_map": {}},
        {"path": str(single), "camera_map": top},
    ]


# ------------------------------------------------------------------------------------------------
# Damage
# ------------------------------------------------------------------------------------------------


def damage(data: bytearray, kind: str, rng: np.random.Generator) -> tuple[bytes, str]:
    size = len(data)
    if kind == "truncate":
        cut = int(rng.integers(0, size))
        return bytes(data[:cut]), f"cut to {cut} of {size} bytes"
    if kind == "zero_block":
        length = int(rng.integers(512, 8193))
        start = int(rng.integers(0, max(size - length, 1)))
        data[start : start + length] = bytes(min(length, size - start))
        return bytes(data), f"zeroed {length} bytes at {start}"
    span = min(4096, size) if kind == "header" else size
    count = int(rng.integers(1, 17))
    offsets = rng.integers(0, span, count)
    for offset in offsets:
        data[int(offset)] ^= int(rng.integers(1, 256))
    return bytes(data), f"{count} bytes flipped at {sorted(int(o) for o in offsets)[:6]}"


# ------------------------------------------------------------------------------------------------
# The worker: runs the readers on one case at a time
# ------------------------------------------------------------------------------------------------


def dataset_names(path: str) -> list[str]:
    """Every dataset of an intact episode (visiting a damaged file can crash HDF5 itself)."""
    import h5py

    names: list[str] = []
    with h5py.File(path, "r", locking=False) as root:
        root.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
    return names


def content_of(path: str, names: list[str]) -> dict:
    """What an episode says, read leniently (no checks of ours): the bytes of each dataset in
    `names`, the attributes, the label state (the record's meaning, not its unused padding).
    Raises whatever HDF5 raises."""
    import h5py

    from recordings import schema
    from recordings.labels import read_label_state

    content: dict = {}
    with h5py.File(path, "r", locking=False) as root:
        content["attrs"] = {k: repr(np.asarray(v).tolist()) for k, v in root.attrs.items()}
        for name in names:
            if "/" + name != schema.LABEL_RECORD:
                item = root[name]
                content[name] = (item.shape, str(item.dtype), item[()].tobytes())
        state, _ = read_label_state(root)
        content["label"] = state.to_json()
    return content


def oracle_case(case: dict) -> dict:
    """Does the damaged copy say exactly what the original says? (Run in its own process: HDF5
    may crash on a damaged file, and that is not the studio's crash.)"""
    try:
        return {"harmless": content_of(case["damaged"], case["names"]) == case_content(case["original"], case["names"])}
    except Exception as error:  # noqa: BLE001 - any failure to read means the damage shows
        return {"harmless": False, "why": f"{type(error).__name__}"}


def run_case(case: dict) -> dict:
    from app.studio.jobs import episodes as cli
    from model.data import CanvasSpec, EpisodeFilter, EpisodeSource, WindowDataset, WindowSpec, find_episodes
    from model.errors import CorruptEpisode, NoEpisodesMatch, UnreadableEpisode

    damaged, good, store = Path(case["damaged"]), Path(case["good"]), Path(case["store"])
    result: dict = {"crash": []}

    out = io.StringIO()
    try:
        cli.main(["list", "--store", str(store), "--json"], out=out)
        rows = {Path(r["path"]).name: r for r in json.loads(out.getvalue())["episodes"]}
        row = rows.get(damaged.name)
        result["list_named"] = row is not None and (row["problem"] is not None or row["warning"] is not None)
        result["list_others_ok"] = rows.get(good.name, {}).get("problem", "missing") is None
    except BaseException as error:  # noqa: BLE001 - the point is to see it
        result["crash"].append(f"list: {type(error).__name__}: {str(error)[:200]}")

    out = io.StringIO()
    try:
        cli.main(["check", "--deep", str(damaged), "--json"], out=out)
        verdict = json.loads(out.getvalue())["results"][0]
        result["check_named"] = (not verdict["ok"]) or verdict["warnings"] != case["original_warnings"]
        result["check_reasons"] = verdict["reasons"][:3] + verdict["warnings"][:1]
    except BaseException as error:  # noqa: BLE001
        result["crash"].append(f"check: {type(error).__name__}: {str(error)[:200]}")

    try:
        canvas = CanvasSpec((48, 40), CAMERAS3, tuple(sorted(case["camera_map"].items())))
        infos = find_episodes([store], EpisodeFilter(labels=("success", "failure", "unknown")), canvas=canvas, deep=True)
        window = WindowSpec(action_horizon=4, frame_stride=2, latent_frames=2, temporal_compression=2)
        dataset = WindowDataset([EpisodeSource(info, 0) for info in infos], window, canvas, mode="frames")
        for index in range(len(dataset)):
            dataset[index]
        result["loader_named"] = damaged.name not in {info.name for info in infos}
    except CorruptEpisode as error:
        result["loader_named"] = damaged.name in {p.name for p in error.problems}
        if good.name in {p.name for p in error.problems}:
            result["crash"].append(f"loader: the good episode was refused too: {str(error)[:200]}")
    except UnreadableEpisode as error:
        result["loader_named"] = damaged.name in str(error)
    except NoEpisodesMatch as error:  # e.g. a label turned into something no filter asks for
        result["loader_named"] = False
        result["loader_note"] = str(error)[:200]
    except BaseException as error:  # noqa: BLE001
        result["crash"].append(f"loader: {type(error).__name__}: {str(error)[:200]}")
    return result


_CONTENT_CACHE: dict[str, dict] = {}


def case_content(path: str, names: list[str]) -> dict:
    if path not in _CONTENT_CACHE:
        _CONTENT_CACHE[path] = content_of(path, names)
    return _CONTENT_CACHE[path]


def worker_main(role: str) -> int:
    import logging

    logging.disable(logging.WARNING)  # the loader's "leaving out" warnings are expected here
    handle = oracle_case if role == "oracle" else run_case
    for line in sys.stdin:
        case = json.loads(line)
        print(json.dumps(handle(case)), flush=True)
    return 0


class Worker:
    """A worker process ("readers": the studio's code; "oracle": the lenient comparison),
    restarted after a crash or a hang."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), PYTHONFAULTHANDLER="1")
        return subprocess.Popen([sys.executable, __file__, "--worker", self.role], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if self.role == "oracle" else subprocess.PIPE,
                                text=True, env=env, cwd=str(ROOT))

    def run(self, case: dict, timeout_s: float) -> tuple[str, dict]:
        """("ok", result) | ("crash", detail) | ("hang", detail)."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        proc = self.proc
        proc.stdin.write(json.dumps(case) + "\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        if not ready:
            self.stop()
            return "hang", {"detail": f"no answer within {timeout_s} s"}
        line = proc.stdout.readline()
        if not line:
            code = proc.wait()
            stderr = proc.stderr.read()[-1500:] if proc.stderr else ""
            self.proc = None
            return "crash", {"detail": f"worker died with exit code {code}", "stderr": stderr}
        return "ok", json.loads(line)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=60.0)
    parser.add_argument("--keep", action="store_true", help="keep the damaged files that crashed, hung or were missed")
    parser.add_argument("--without-checksums", action="store_true",
                        help="damage episodes in the format written before checksums (no Fletcher-32): shows what "
                             "cannot be detected in older stores")
    parser.add_argument("--worker", choices=("readers", "oracle"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)

    from recordings.check import check_episode

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="fuzz_episodes_"))
    worker, oracle = Worker("readers"), Worker("oracle")
    rng = np.random.default_rng(args.seed)
    counts = {kind: {"files": 0, "crash": 0, "hang": 0, "harmless": 0, "named": 0, "missed": 0, "list_named": 0,
                     "oracle_failed": 0} for kind in KINDS}
    problems = []
    try:
        bases = make_bases(work / "bases", checksums=not args.without_checksums)
        for base in bases:
            base["warnings"] = list(check_episode(base["path"], deep=True).warnings)
            base["names"] = dataset_names(base["path"])
        for i in range(args.files):
            base = bases[i % len(bases)]
            kind = KINDS[int(rng.integers(0, len(KINDS)))]
            store = work / f"case_{i:04d}"
            store.mkdir()
            good = store / "episode_0.hdf5"
            shutil.copyfile(base["path"], good)  # an intact copy: the loader must still take it
            damaged = store / "episode_1.hdf5"
            data, how = damage(bytearray(Path(base["path"]).read_bytes()), kind, rng)
            damaged.write_bytes(data)
            case = {"store": str(store), "good": str(good), "damaged": str(damaged), "original": base["path"],
                    "original_warnings": base["warnings"], "camera_map": base["camera_map"], "names": base["names"]}
            status, result = worker.run(case, args.timeout_s)
            tally = counts[kind]
            oracle_status, verdict = oracle.run(case, args.timeout_s)
            if oracle_status != "ok":  # HDF5 itself crashed or hung reading the copy: not harmless
                tally["oracle_failed"] += 1
                verdict = {"harmless": False}
            if status == "ok":
                result["harmless"] = verdict["harmless"]
            tally["files"] += 1
            outcome = None
            if status != "ok":
                tally[status] += 1
                outcome = status
            elif result["crash"]:
                tally["crash"] += 1
                outcome = "crash"
            else:
                tally["list_named"] += bool(result.get("list_named"))
                if result["harmless"]:
                    tally["harmless"] += 1
                elif result.get("check_named") and result.get("loader_named"):
                    tally["named"] += 1
                else:
                    tally["missed"] += 1
                    outcome = "missed"
                if not result.get("list_others_ok", False):
                    outcome = outcome or "crash"
                    tally["crash"] += 1
                    result["crash"].append("list: the good episode beside the damaged one was not listed as good")
            if outcome:
                problems.append({"case": i, "kind": kind, "damage": how, "base": Path(base["path"]).parent.name,
                                 "outcome": outcome, **result})
                if args.keep:
                    shutil.copyfile(damaged, work / f"{outcome}_{i:04d}.hdf5")
            shutil.rmtree(store, ignore_errors=True)
    finally:
        worker.stop()
        oracle.stop()
    for kind, tally in counts.items():
        print(json.dumps({"benchmark": "fuzz_episodes", "kind": kind, **tally}), flush=True)
    total = {key: sum(t[key] for t in counts.values()) for key in next(iter(counts.values()))}
    for problem in problems[:20]:
        print(json.dumps({"benchmark": "fuzz_episodes", "problem": problem}, default=str), flush=True)
    print(json.dumps({"benchmark": "fuzz_episodes", "kind": "all", **total, "seed": args.seed,
                      "checksums": not args.without_checksums,
                      "seconds": round(time.monotonic() - started, 1), "cpus": os.cpu_count(),
                      "load_1min": round(os.getloadavg()[0], 2),
                      "kept": str(work) if args.keep and problems else None}), flush=True)
    if not (args.keep and problems):
        shutil.rmtree(work, ignore_errors=True)
    return 0 if total["crash"] == total["hang"] == total["missed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
