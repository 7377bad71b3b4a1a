"""Benchmark: the Episodes workbench on a large store and on a three-camera 480x640 JPEG episode.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/review.py [--episodes 1000] [--seconds 5]

Prints one JSON line per measurement:
- store_open: time from creating the workbench window (its plots included) to the table painted
  with every row checked against the files (the first episode opens after that), for a store of N
  synthetic episodes (400 steps, three cameras, tiny frames: the table reads metadata and small
  arrays, never frames). cold = no index file (every episode is read; the OS file cache is warm
  unless --drop-caches works here), warm = with the index (median of 5); *_cpu_s is the CPU time
  the process spent meanwhile (what the open costs, whatever else the machine runs). baseline: the
  cold time (ratio = warm / cold). Aim: warm < 1 s.
- stages: where a frame's time goes, each stage alone on the GUI thread (wall and CPU ms,
  medians): reading a step's three JPEG rows, decoding them at full size and at the shown size
  (a reduced JPEG decode when shown at most half as wide, then bilinear), painting the three
  cameras, moving the cursor (timeline and joint plots), and showing a step with all its paints.
- seek: latency of a random seek in the episode view until every camera shows the new step
  (frames decoded at the shown size, cursor and plots painted), p50/p95 over random steps, and
  the GUI thread's CPU time for it (cpu_p50_ms: the seek's cost whatever the load). baseline:
  reading and decoding the three frames at the shown size one after another on one thread, no
  window. Aim: < 50 ms.
- playback: distinct steps put on screen per second while playing at 1x (50 Hz due) and 2x
  (100 Hz due), camera paints per second, and the CPU time per frame of the GUI thread and of
  the decode threads (what a frame costs, whatever else the machine runs); prefetcher_fps_no_window
  is what its workers supply with no window. baseline: the sequential read + decode of a step
  on one thread (steps per second), measured right after. Aim: >= 50 fps at 1x.

Every line carries `code` (the commit measured), so runs of two versions interleaved on the same
loaded machine can be compared.
The machine is shared: the load average (uptime) is printed with each line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from review_fixtures import write_jpeg_store_episode  # noqa: E402  (the tests' synthetic episodes)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def emit(**fields) -> None:
    fields["load_avg"] = load()
    print(json.dumps(fields), flush=True)


def build_store(store: Path, episodes: int) -> float:
    started = time.perf_counter()
    for k in range(episodes):
        created = f"2026-0{1 + k % 9}-1{k % 10}T10:{k % 60:02d}:00+00:00"
        write_jpeg_store_episode(store, 400, shape=(16, 16), seed=k, created=created, task=("fold", "flatten")[k % 2],
                                 operator=("ann", "bob", "cy")[k % 3], label=("success", "failure", "unknown")[k % 3],
                                 distinct_frames=2)
    return time.perf_counter() - started


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
        return True
    except OSError:
        return False


def time_to_table(app, store: Path) -> tuple[float, int, float]:
    """(wall s, rows, CPU s of this process) from creating the window to the painted table."""
    from PySide6.QtCore import QCoreApplication, QEvent

    from app.ui.workbench.workbench_widget import WorkbenchWidget

    started, cpu = time.perf_counter(), time.process_time()
    widget = WorkbenchWidget(store)
    widget.show()
    while not widget.loaded:
        app.processEvents()
        time.sleep(0.001)
    widget.table.view.viewport().repaint()  # the filled table on screen (the first episode opens after)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    app.processEvents()
    rows = widget.table.model.rowCount()
    time.sleep(0.15)
    app.processEvents()  # let it open its first episode, so that does not land in the next run
    widget.close()
    widget.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    app.processEvents()
    return elapsed, rows, cpu


def bench_store(app, episodes: int, try_drop: bool) -> None:
    from recordings.index import INDEX_FILE

    work = Path(tempfile.mkdtemp(prefix="review-bench-"))
    try:
        store = work / "store"
        build_s = build_store(store, episodes)
        size_mb = sum(f.stat().st_size for f in store.iterdir()) / 1e6
        dropped = try_drop and drop_caches()
        cold_s, rows, cold_cpu_s = time_to_table(app, store)
        assert (store / INDEX_FILE).is_file()
        runs = [time_to_table(app, store) for _ in range(5)]
        warm = [run[0] for run in runs]
        warm_s = statistics.median(warm)
        warm_cpu_s = statistics.median(run[2] for run in runs)
        emit(bench="store_open", code=code_version(), episodes=episodes, rows=rows, store_mb=round(size_mb, 1), build_s=round(build_s, 1),
             page_cache_dropped=dropped, cold_s=round(cold_s, 3), cold_cpu_s=round(cold_cpu_s, 3), warm_s=round(warm_s, 3),
             warm_cpu_s=round(warm_cpu_s, 3), warm_all_s=[round(x, 3) for x in warm],
             baseline="cold_s", ratio=round(warm_s / cold_s, 4), aim_warm_s=1.0)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def code_version() -> str:
    """The commit measured (+ "-dirty" with uncommitted changes), so runs of two versions can be told apart."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def median_span(fn, runs: int) -> tuple[float, float]:
    """(wall ms, CPU ms of this thread), medians of `runs` calls fn(k)."""
    walls, cpus = [], []
    for k in range(runs):
        begin, cpu = time.perf_counter(), time.thread_time()
        fn(k)
        walls.append((time.perf_counter() - begin) * 1e3)
        cpus.append((time.thread_time() - cpu) * 1e3)
    return round(statistics.median(walls), 2), round(statistics.median(cpus), 2)


def sequential_step_ms(path: Path, size, steps: int) -> tuple[float, float]:
    """The plain path, no threads, no window: read a step's three JPEG rows and decode them at the
    shown size one after another on this thread. (median, mean) wall ms per step over 40 steps:
    the median for a seek, the mean (preemptions included) for a sustained rate."""
    from recordings.playback import decode_for_display
    from recordings.reader import Episode

    with Episode.open(path) as episode:
        widths = {camera: episode.frame(camera, 0).shape[1] for camera in episode.camera_names}

        def step(k: int) -> None:
            for camera in episode.camera_names:
                decode_for_display(episode.encoded_frame(camera, (k * 7) % steps), size, widths[camera])

        begin = time.perf_counter()
        median = median_span(step, 40)[0]
        return median, (time.perf_counter() - begin) * 1e3 / 40


def run_event_loop(done) -> None:
    """Run Qt's event loop (as the window does: it sleeps between events) until done() is true,
    checked every 10 ms. A processEvents() spin would add its own CPU to the GUI thread's."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    check = QTimer()
    check.setInterval(10)
    check.timeout.connect(lambda: loop.quit() if done() else None)
    check.start()
    loop.exec()
    check.stop()


def bench_stages(app, view, path: Path, steps: int) -> None:
    """Where a frame's time goes, each stage alone on the GUI thread (medians, wall and CPU ms)."""
    from recordings.playback import FrameSet, decode_for_display
    from recordings.reader import Episode

    size = view.prefetcher.size
    with Episode.open(path) as episode:
        cameras = episode.camera_names
        rows = {camera: episode.encoded_frame(camera, 0) for camera in cameras}
        widths = {camera: episode.frame(camera, 0).shape[1] for camera in cameras}
        read = median_span(lambda k: [episode.encoded_frame(camera, (k * 7) % steps) for camera in cameras], 40)
    decode_full = median_span(lambda k: [decode_for_display(rows[camera], None) for camera in cameras], 40)
    decode_shown = median_span(lambda k: [decode_for_display(rows[camera], size, widths[camera]) for camera in cameras], 40)
    frame_sets = [view.prefetcher.frames(k) for k in range(4)]

    def paint_cameras(k: int) -> None:
        for camera, image in frame_sets[k % 4].frames.items():
            view.cameras[camera].set_frame(image, float(k), None)
        app.processEvents()

    def paint_cursor(k: int) -> None:
        step = (k * 7) % steps
        view.timeline_widget.set_cursor(step)
        view.plots.set_cursor(step)
        app.processEvents()

    def show(k: int) -> None:
        frames = frame_sets[k % 4]
        view._show(FrameSet((k * 7) % steps, frames.frames, frames.size))
        app.processEvents()

    fields = {"read_3_rows": read, "decode_3_full_size": decode_full, "decode_3_at_shown_size": decode_shown,
              "paint_3_cameras": median_span(paint_cameras, 40), "paint_cursor_timeline_plots": median_span(paint_cursor, 40),
              "show_step_all_paints": median_span(show, 40)}
    emit(bench="stages", code=code_version(), decode_size=list(size) if size else "recorded",
         **{f"{name}_ms": wall for name, (wall, cpu) in fields.items()}, **{f"{name}_cpu_ms": cpu for name, (wall, cpu) in fields.items()},
         note="each stage alone on the GUI thread, medians of 40; the rest of a seek or frame is waiting for a CPU")


def bench_episode(app, seconds: float, steps: int) -> None:
    from recordings.playback import FramePrefetcher
    from recordings.reader import Episode
    from app.ui.workbench.episode_view import EpisodeViewWidget

    work = Path(tempfile.mkdtemp(prefix="review-bench-"))
    try:
        path = write_jpeg_store_episode(work, steps, shape=(480, 640), quality=90)
        with Episode.open(path) as episode:
            cameras = episode.camera_names

        view = EpisodeViewWidget()
        view.resize(1500, 900)
        view.show()
        app.processEvents()
        view.open_episode(path)
        app.processEvents()
        for step in (1, 0):  # the cameras are laid out now: the next shown step sets the decode size
            view.seek(step)
            app.processEvents()
        shown_size = next(iter(view.cameras.values())).size()
        size = view.prefetcher.size
        bench_stages(app, view, path, steps)

        serial_ms = sequential_step_ms(path, size, steps)[0]
        rng = random.Random(0)
        latencies, cpu_ms = [], []
        for _ in range(60):
            step = rng.randrange(steps)
            begin, cpu = time.perf_counter(), time.thread_time()
            view.seek(step)  # decodes on this thread when the step is not decoded ahead
            app.processEvents()  # the paint
            latencies.append((time.perf_counter() - begin) * 1e3)
            cpu_ms.append((time.thread_time() - cpu) * 1e3)
            assert view.cursor == step
        latencies.sort()
        cpu_ms.sort()
        p50 = latencies[len(latencies) // 2]
        emit(bench="seek", code=code_version(), cameras=len(cameras), frame="480x640 JPEG q90",
             shown=f"{shown_size.width()}x{shown_size.height()}", decode_size=list(size) if size else "recorded",
             seeks=len(latencies), p50_ms=round(p50, 1), p95_ms=round(latencies[int(len(latencies) * 0.95) - 1], 1),
             max_ms=round(latencies[-1], 1), cpu_p50_ms=round(cpu_ms[len(cpu_ms) // 2], 1),
             baseline="sequential_read_decode_3_frames_at_shown_size_ms", baseline_ms=round(serial_ms, 1),
             ratio=round(p50 / serial_ms, 3), aim_ms=50)

        for speed_index, speed in ((1, 1.0), (2, 2.0)):
            view.pause()
            view.seek(0)
            view.speed.setCurrentIndex(speed_index)
            paints0 = sum(c.frames_shown for c in view.cameras.values())
            shown0 = view.frames_shown
            gui0, process0 = time.thread_time(), time.process_time()
            view.play()
            started = time.perf_counter()
            run_event_loop(lambda: time.perf_counter() - started >= seconds or not view.clock.playing)
            elapsed = time.perf_counter() - started
            gui_ms, process_ms = (time.thread_time() - gui0) * 1e3, (time.process_time() - process0) * 1e3
            shown = view.frames_shown - shown0
            paints = sum(c.frames_shown for c in view.cameras.values()) - paints0
            due = 50.0 * speed
            with FramePrefetcher(path, ahead=steps, size=size) as alone:
                begin = time.perf_counter()
                deadline = begin + 300
                while alone.decoded < steps and alone.error is None and time.perf_counter() < deadline:
                    time.sleep(0.01)
                decode_fps = alone.decoded / (time.perf_counter() - begin)
            sequential_fps = 1e3 / sequential_step_ms(path, size, steps)[1]  # measured now: the load moves
            emit(bench="playback", code=code_version(), speed=speed, due_fps=due, seconds=round(elapsed, 2),
                 shown_fps=round(shown / elapsed, 1), camera_paints_per_s=round(paints / elapsed / len(cameras), 1),
                 decode_size=list(size) if size else "recorded",
                 gui_cpu_ms_per_frame=round(gui_ms / max(shown, 1), 2), worker_cpu_ms_per_frame=round((process_ms - gui_ms) / max(shown, 1), 2),
                 prefetcher_fps_no_window=round(decode_fps, 1),
                 baseline="sequential_read_decode_fps_one_thread", baseline_fps=round(sequential_fps, 1),
                 ratio=round(shown / elapsed / sequential_fps, 3), aim_fps=50)
        view.close_episode()
        view.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0, help="playback time per speed")
    parser.add_argument("--steps", type=int, default=500, help="steps of the playback episode")
    parser.add_argument("--drop-caches", action="store_true", help="drop the OS page cache before the cold open (root)")
    parser.add_argument("--only", choices=("store", "episode"), default=None)
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from app.ui import theme

    app = QApplication.instance() or QApplication(["review-benchmark"])
    app.setStyleSheet(theme.STYLESHEET)
    if args.only in (None, "store"):
        bench_store(app, args.episodes, args.drop_caches)
    if args.only in (None, "episode"):
        bench_episode(app, args.seconds, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
