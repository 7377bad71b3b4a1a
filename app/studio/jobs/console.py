"""How a `run.py` job speaks: JSON lines for programs, a live progress display for people.

    reporter = open_reporter(json_lines=args.json, view=TrainingView())
    with reporter:
        reporter.event("stage", stage="train", steps=1500)
        ...

JSON lines (output piped or redirected, `--json`, or no view): each event is one line on stdout,
{"event": name, **fields}, flushed at once; the window and scripts read these.

On a terminal: a progress bar (what is being done, done/total, time left, the key figures) with
the events worth reading as lines above it, and a summary table at the end (rich). What each event
means for the display is the command's `View`: it returns what to show (`Shown`), the reporter
draws it. A new bar label starts a new bar and the earlier ones stay, so the terminal keeps one
line per stage.

Thread ownership: one reporter per process, used from the thread that runs the job.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import IO, Any, Mapping, Protocol, Sequence

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from model.json_lines import json_line

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class Line:
    """A line printed above the bar. level: info | note (dim) | warning | error."""

    text: str
    level: str = "info"


@dataclass(frozen=True)
class Bar:
    """The bar as it stands. done/total None: unknown (a pulsing bar); eta_s None: the bar's own
    estimate from its progress; figures: the key numbers, e.g. "loss 0.41 · lr 3e-4"."""

    label: str
    done: float | None = None
    total: float | None = None
    eta_s: float | None = None
    figures: str = ""


@dataclass(frozen=True)
class Summary:
    """The table that ends a job. level: ok | warning | error (its colour)."""

    title: str
    rows: Sequence[tuple[str, str]]
    level: str = "ok"


@dataclass(frozen=True)
class Shown:
    """What a view makes of one event: lines to print, the bar's new state (None: unchanged),
    and a summary when the event ends the job."""

    lines: Sequence[Line] = ()
    bar: Bar | None = None
    summary: Summary | None = None


class View(Protocol):
    """One command's events as people read them on a terminal."""

    def show(self, name: str, fields: Mapping[str, Any]) -> Shown: ...


class Reporter(Protocol):
    """Where a job's events go. `event(name, **fields)` for each; `close()` (or leaving the
    `with` block) when the job ends."""

    def event(self, name: str, /, **fields: Any) -> None: ...

    def log_handler(self) -> logging.Handler: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Reporter": ...

    def __exit__(self, *exc: object) -> None: ...


def open_reporter(json_lines: bool | None = None, view: View | None = None, stream: IO[str] | None = None) -> Reporter:
    """JSON lines when asked (`json_lines=True`), when there is no view, or when `stream`
    (stdout by default) is not a terminal; else the live display. json_lines=False forces the
    live display (e.g. to test it on a file)."""
    stream = stream or sys.stdout
    use_json = json_lines if json_lines is not None else not stream.isatty()
    if use_json or view is None:
        return JsonLinesReporter(stream)
    return LiveReporter(view, stream)


class _ReporterBase:
    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        pass


class JsonLinesReporter(_ReporterBase):
    """One JSON object a line, "event" first, flushed per line; always valid JSON
    (`model.json_lines`: NaN and infinities are written as null)."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def event(self, name: str, /, **fields: Any) -> None:
        self.stream.write(json_line({"event": name, **fields}) + "\n")
        self.stream.flush()

    def log_handler(self) -> logging.Handler:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        return handler


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d} left" if hours else f"{minutes}:{secs:02d} left"


class _EtaColumn(ProgressColumn):
    """The job's own estimate when it gives one, else rich's from the bar's progress."""

    def render(self, task: Task) -> Text:
        if task.finished:
            return Text("")
        eta = task.fields.get("eta_s")
        if eta is None and task.total is not None:
            eta = task.time_remaining
        return Text(format_eta(eta), style="cyan")


class _CountColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        if task.total is None or task.fields.get("unknown"):
            return Text("")
        return Text(f"{task.completed:g}/{task.total:g}")


LEVEL_STYLE = {"info": "", "note": "dim", "warning": "yellow", "error": "bold red", "ok": "green"}


class LiveReporter(_ReporterBase):
    """The live display on a terminal (rich). Nothing is drawn until the first event, so a process
    that only ever reports an error (a torchrun rank but the first) shows just that."""

    def __init__(self, view: View, stream: IO[str]):
        self.view = view
        self.console = Console(file=stream)
        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓"), TextColumn("[bold]{task.description}"), BarColumn(bar_width=24),
            _CountColumn(), _EtaColumn(), TextColumn("{task.fields[figures]}"),
            console=self.console,  # stray prints and warnings are drawn above the bars too
        )
        self._started = False
        self._task: TaskID | None = None
        self._label = ""

    def event(self, name: str, /, **fields: Any) -> None:
        shown = self.view.show(name, fields)
        if not self._started and (shown.lines or shown.bar or shown.summary):
            self.progress.start()
            self._started = True
        for line in shown.lines:
            self.console.print(Text(line.text, style=LEVEL_STYLE.get(line.level, "")))
        if shown.bar is not None:
            self._draw(shown.bar)
        if shown.summary is not None:
            self._finish_bar()
            self.progress.stop()
            self.console.print(self._table(shown.summary))

    def _draw(self, bar: Bar) -> None:
        if bar.label != self._label or self._task is None:
            self._finish_bar()
            self._label = bar.label
            self._task = self.progress.add_task(bar.label, total=bar.total, figures=bar.figures, eta_s=bar.eta_s,
                                                unknown=bar.done is None)
        self.progress.update(self._task, total=bar.total, completed=bar.done or 0, figures=bar.figures,
                             eta_s=bar.eta_s, unknown=bar.done is None)

    def _finish_bar(self) -> None:
        """The bar of the stage that ended stays as it stood (one of unknown length drawn full)."""
        if self._task is None:
            return
        task = next(t for t in self.progress.tasks if t.id == self._task)
        if task.total is None or task.fields.get("unknown"):
            self.progress.update(self._task, total=1, completed=1, unknown=True)
        self.progress.update(self._task, eta_s=None)
        self.progress.stop_task(self._task)
        self._task = None

    @staticmethod
    def _table(summary: Summary) -> Table:
        table = Table(title=summary.title, title_style=LEVEL_STYLE.get(summary.level, "") or "bold",
                      show_header=False, box=None, padding=(0, 2))
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for name, value in summary.rows:
            table.add_row(name, value)
        return table

    def log_handler(self) -> logging.Handler:
        """Log records drawn above the bar (a plain stream handler would tear the display)."""
        handler = RichHandler(console=self.console, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))  # time and level are its own columns
        return handler

    def close(self) -> None:
        if self._started:
            self._finish_bar()
            self.progress.stop()
