"""Benchmark: the whole pipeline on the simulated towel fold, with and without video co-training.

    .venv/bin/python benchmarks/end_to_end.py --out runs/e2e [--demos 150] [--steps 4000]
        [--eval-episodes 50] [--eval-seed 1000] [--preset tiny] [--eval-args="--strategy plain"] [--parallel 2]

1. `run.py demos`: scripted folds, seeds 0..N-1 (split over `--parallel` processes, each into
   its own store; the trainer takes several stores);
2. `run.py train`, Fast-WAM (video co-training) first; the autoencoder it pretrains is reused by
   the ablation (`--no-video-cotraining --vae-from`), so both variants see the same frozen
   latents; the ablation starts once the first run's cache is ready and runs beside it;
3. `run.py eval` of each `best/` checkpoint over the same unseen seeds (split over `--parallel`
   processes), success rates with 95% Wilson intervals.

Everything goes through the commands a user runs; each stage's JSON lines are kept in `--out`.
A rerun with the same `--out` skips the stages whose results are there. Prints JSON lines:
"stage" (what ran, wall seconds, load average), one "variant" line per variant (success rate,
interval, fold error, policy latency, training time) and a "comparison" line (the rate
difference with co-training minus without). Measured on the 2-core CPU (load 2-4), stage by stage:
90 demos in 10 min over 2 processes; tiny, 4000 steps on 150 demos: 51 min with video (the
autoencoder reused, 90 episodes newly cached), 19 min without, side by side; eval of 50 seeds:
11 min in one process, 5.2 min in two. Results, 50 seeds from 1000: with temporal ensembling (the
eval's default) 30% [19-44%] with video co-training, 96% [87-99%] without; plain chunks of 16 of
32 (`--eval-args="--strategy plain"`) 26% [16-40%] and 32% [21-46%].
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.studio.evaluation import wilson_interval  # noqa: E402

VARIANTS = {"video": [], "novideo": ["--no-video-cotraining"]}


def _emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields, "load_1m": round(os.getloadavg()[0], 2)}), flush=True)


def _lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def _start(args: list[str], stdout: Path) -> subprocess.Popen:
    stdout.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], cwd=REPO,
                            stdout=stdout.open("w"), stderr=stdout.with_suffix(".err").open("w"))


def _wait(processes: list[subprocess.Popen], what: str) -> None:
    for process in processes:
        if process.wait() != 0:
            raise SystemExit(f"{what} failed (exit {process.returncode}); see the .err files beside its .jsonl")


def _shares(first: int, count: int, parts: int) -> list[tuple[int, int]]:
    """(first seed, count) of each of `parts` near-equal consecutive shares."""
    parts = max(1, min(parts, count))
    base, extra = divmod(count, parts)
    shares, seed = [], first
    for i in range(parts):
        n = base + (1 if i < extra else 0)
        shares.append((seed, n))
        seed += n
    return shares


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--demos", type=int, default=150)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--eval-seed", type=int, default=1000)
    parser.add_argument("--eval-args", default="",
                        help="extra flags for both evaluations, e.g. --eval-args='--strategy plain' (with =)")
    parser.add_argument("--parallel", type=int, default=2, help="processes for demos and eval (one thread each)")
    parser.add_argument("--train-args", default="",
                        help="extra flags for both training runs, e.g. --train-args=\"--set num_layers=1\" (with =)")
    args = parser.parse_args(argv)
    if args.eval_seed < args.demos:
        parser.error(f"--eval-seed {args.eval_seed} overlaps the demonstration seeds 0..{args.demos - 1}")
    out = args.out.resolve()

    # 1. Demonstrations.
    started = time.monotonic()
    stores, pending = [], []
    for i, (seed, count) in enumerate(_shares(0, args.demos, args.parallel)):
        store = out / f"demos_{i}"
        stores.append(store)
        log = out / f"demos_{i}.jsonl"
        if sum(1 for e in _lines(log) if "episode" in e) < count:
            pending.append(_start(["demos", "--episodes", str(count), "--seed", str(seed), "--store", str(store)], log))
    _wait(pending, "run.py demos")
    _emit("stage", stage="demos", episodes=args.demos, wall_s=round(time.monotonic() - started, 1), ran=bool(pending))

    # 2. Training: Fast-WAM first (it pretrains the autoencoder), the ablation beside it.
    common = ["train", "--store", *map(str, stores), "--preset", args.preset, "--steps", str(args.steps),
              "--threads", "1", "--cache-dir", str(out / "cache"), *args.train_args.split()]
    runs = {v: out / f"run_{v}" for v in VARIANTS}
    logs = {v: out / f"train_{v}.jsonl" for v in VARIANTS}
    done = {v: any(e["event"] == "summary" for e in _lines(logs[v])) for v in VARIANTS}
    started = time.monotonic()
    jobs = {}
    if not done["video"]:
        resume = ["--resume"] if (runs["video"] / "latest.json").exists() else []
        jobs["video"] = _start([*common, "--out", str(runs["video"]), *resume], logs["video"])
        while not any(e["event"] in ("cache_ready", "error") for e in _lines(logs["video"])):
            if jobs["video"].poll() is not None:
                break
            time.sleep(5)
    if not done["novideo"]:
        resume = ["--resume"] if (runs["novideo"] / "latest.json").exists() else []
        jobs["novideo"] = _start([*common, "--out", str(runs["novideo"]), *VARIANTS["novideo"], "--vae-from",
                                  str(runs["video"]), *resume], logs["novideo"])
    _wait(list(jobs.values()), "run.py train")
    _emit("stage", stage="train", steps=args.steps, wall_s=round(time.monotonic() - started, 1), ran=sorted(jobs))

    # 3. Evaluation of each variant's best checkpoint on the same unseen seeds.
    started = time.monotonic()
    results = {}
    for variant in VARIANTS:
        pending, logs_eval = [], []
        for i, (seed, count) in enumerate(_shares(args.eval_seed, args.eval_episodes, args.parallel)):
            log = out / f"eval_{variant}_{i}.jsonl"
            logs_eval.append(log)
            if not any(e["event"] == "summary" for e in _lines(log)):
                pending.append(_start(["eval", "--checkpoint", str(runs[variant]), "--episodes", str(count), "--seed",
                                       str(seed), "--threads", "1", *args.eval_args.split()], log))
        _wait(pending, "run.py eval")
        episodes = [e for log in logs_eval for e in _lines(log) if e["event"] == "episode"]
        summaries = [e for log in logs_eval for e in _lines(log) if e["event"] == "summary"]
        successes = sum(bool(e["success"]) for e in episodes)
        summary = next(e for e in _lines(logs[variant]) if e["event"] == "summary")
        results[variant] = successes / max(1, len(episodes))
        errors = sorted(e["fold_error_m"] for e in episodes)
        _emit("variant", variant=variant, episodes=len(episodes), successes=successes,
              success_rate=round(results[variant], 4),
              success_ci95=[round(x, 4) for x in wilson_interval(successes, len(episodes))],
              fold_error_m_mean=round(sum(errors) / max(1, len(errors)), 4),
              fold_error_m_median=errors[len(errors) // 2] if errors else None,
              latency_p50_ms=max(s["latency"]["p50_ms"] for s in summaries),
              train_elapsed_s=summary["elapsed_s"], train_step_s=summary["train_step_s"],
              best_val_action_loss=summary["best_val_action_loss"])
    _emit("stage", stage="eval", wall_s=round(time.monotonic() - started, 1))
    _emit("comparison", cotraining_minus_ablation=round(results["video"] - results["novideo"], 4))
    return 0


if __name__ == "__main__":
    sys.exit(main())
