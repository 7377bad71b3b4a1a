"""The measurement that picks the default execution strategy: one checkpoint on the sim towel task,
the same unseen seeds for every strategy at every injected inference delay, plus real time.

    .venv/bin/python benchmarks/strategies.py --checkpoint runs/best --seeds 50 [--seed 1000]
        [--strategies plain,ensemble,rtc] [--delays 0,100,200,300] [--real-time] [--parallel 2]

Every cell is `run.py eval` (app/studio/jobs/evaluate.py) over the seeds, split across `--parallel`
processes (each with one torch thread): `--delay-ms D` for the delays (simulated: the same result
on any machine), `--real-time` for the studio's own path on this machine's clock. Prints JSON
lines: one per cell (strategy, timing, successes / episodes, success rate with its 95% Wilson
interval, the share of the strategy's zero-delay success it keeps, fold error, inference and
observation-to-command latency p50/p99/max, skipped actions, wall time) and a last "choice" line:
the strategy with the best success at 200 ms among those that keep at least 90% of their
zero-delay success there (the issue's aim), and the table as markdown for the README.

Latency across processes: p50 is the median of the processes' p50s, p99 and max the largest of
theirs (each process sees a share of the seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.studio.evaluation import wilson_interval  # noqa: E402


def _split(first: int, count: int, parts: int) -> list[tuple[int, int]]:
    """(first seed, episodes) for each of `parts` processes."""
    parts = max(1, min(parts, count))
    base, extra = divmod(count, parts)
    out, seed = [], first
    for i in range(parts):
        n = base + (1 if i < extra else 0)
        out.append((seed, n))
        seed += n
    return out


def run_cell(args, strategy: str, delay: str | None) -> dict:
    """One strategy at one timing (a delay in ms, or None for real time) over all seeds."""
    started = time.monotonic()
    procs = []
    for first, count in _split(args.seed, args.seeds, args.parallel):
        cmd = [sys.executable, str(ROOT / "run.py"), "eval", "--checkpoint", args.checkpoint, "--episodes", str(count),
               "--seed", str(first), "--strategy", strategy, "--threads", "1", "--max-seconds", str(args.max_seconds),
               "--device", args.device]
        cmd += ["--real-time"] if delay is None else ["--delay-ms", delay]
        if args.execute.get(strategy):
            cmd += ["--execute", str(args.execute[strategy])]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    summaries, errors = [], []
    for proc in procs:
        out, err = proc.communicate()
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        summary = next((line for line in lines if line.get("event") == "summary"), None)
        if proc.returncode != 0 or summary is None:
            errors.append((lines[-1] if lines else {}).get("message") or err.strip()[-500:])
        else:
            summaries.append(summary)
    if errors:
        return {"benchmark": "strategies", "strategy": strategy, "timing": "real time" if delay is None else f"{delay} ms",
                "error": errors}
    successes = sum(s["successes"] for s in summaries)
    episodes = sum(s["episodes"] for s in summaries)
    lo, hi = wilson_interval(successes, episodes)

    def merged(key: str, field: str, how) -> float | None:
        values = [s[key][field] for s in summaries if s[key][field] is not None]
        return round(how(values), 2) if values else None

    def median(values):
        values = sorted(values)
        return values[len(values) // 2]

    fold = [s["fold_error_m_mean"] for s in summaries]
    return {
        "benchmark": "strategies", "strategy": strategy, "timing": "real time" if delay is None else f"{delay} ms",
        "every": summaries[0]["every"], "successes": successes, "episodes": episodes,
        "success_rate": round(successes / episodes, 4), "success_ci95": [round(lo, 4), round(hi, 4)],
        "fold_error_m_mean": round(sum(f * s["episodes"] for f, s in zip(fold, summaries)) / episodes, 4),
        "inference_p50_ms": merged("latency", "p50_ms", median), "inference_p99_ms": merged("latency", "p99_ms", max),
        "inference_max_ms": merged("latency", "max_ms", max),
        "obs_to_command_p50_ms": merged("obs_to_command", "p50_ms", median),
        "obs_to_command_p99_ms": merged("obs_to_command", "p99_ms", max),
        "wall_s": round(time.monotonic() - started, 1), "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def markdown(cells: list[dict], delays: list[str], real_time: bool) -> str:
    columns = [f"{d} ms" for d in delays] + (["real time"] if real_time else [])
    lines = ["| strategy | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for strategy in dict.fromkeys(c["strategy"] for c in cells):
        row = []
        for column in columns:
            cell = next((c for c in cells if c["strategy"] == strategy and c["timing"] == column), None)
            if cell is None or "error" in cell:
                row.append("-")
            else:
                lo, hi = cell["success_ci95"]
                row.append(f"{cell['success_rate']:.0%} [{lo:.0%}-{hi:.0%}]")
        lines.append(f"| {strategy} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/strategies.py", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1000, help="first towel seed (demos use 0.., so 1000.. is unseen)")
    parser.add_argument("--strategies", default="plain,ensemble,rtc")
    parser.add_argument("--delays", default="0,100,200,300", help="simulated inference delays in ms")
    parser.add_argument("--real-time", action=argparse.BooleanOptionalAction, default=True,
                        help="also run each strategy in real time (the studio's path)")
    parser.add_argument("--execute", action="append", default=[], metavar="STRATEGY=K",
                        help="ticks between chunks for a strategy, e.g. plain=16 (default: eval's)")
    parser.add_argument("--max-seconds", type=float, default=15.0)
    parser.add_argument("--parallel", type=int, default=2, help="eval processes per cell")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    args.execute = {k: int(v) for k, _, v in (item.partition("=") for item in args.execute)}
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    delays = [d.strip() for d in args.delays.split(",") if d.strip()]
    cells = []
    for strategy in strategies:
        for delay in delays + ([None] if args.real_time else []):
            cell = run_cell(args, strategy, delay)
            zero = next((c for c in cells if c["strategy"] == strategy and c["timing"] == f"{delays[0]} ms"
                         and "error" not in c), None)
            if zero is not None and "error" not in cell and zero["success_rate"]:
                cell["kept_of_zero_delay"] = round(cell["success_rate"] / zero["success_rate"], 3)
            cells.append(cell)
            print(json.dumps(cell), flush=True)
    at_200 = [c for c in cells if c["timing"] == "200 ms" and "error" not in c]
    keeping = [c for c in at_200 if c.get("kept_of_zero_delay", 0) >= 0.9]
    best = max(keeping or at_200, key=lambda c: c["success_rate"], default=None)
    print(json.dumps({"benchmark": "strategies", "choice": None if best is None else best["strategy"],
                      "keeps_90_percent_at_200ms": [c["strategy"] for c in keeping],
                      "table_markdown": markdown(cells, delays, args.real_time)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
