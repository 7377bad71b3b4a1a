"""The list of failure reasons a lab picks from when it marks an episode a failure.

It lives in the store as `failure_reasons.txt`, one reason a line (lines starting with # are
comments), so the lab edits it in any text editor or from the Episodes view. A store without the
file uses `DEFAULT_FAILURE_REASONS`. The reason chosen for an episode is written into the episode
file with its label (`recordings.store.set_label(..., reason=...)`); a reason that is not (or no
longer) in the list is still shown as it was written.
"""

from __future__ import annotations

import os
from pathlib import Path

REASONS_FILE = "failure_reasons.txt"

#: What goes wrong when folding a towel with two arms, as a start for the lab's own list.
DEFAULT_FAILURE_REASONS: tuple[str, ...] = (
    "missed grasp",
    "towel dropped",
    "fold incomplete",
    "fold misaligned",
    "arms collided",
    "operator error",
    "timing problem",
    "camera problem",
)

_HEADER = (
    "# Failure reasons offered when an episode is marked a failure: one a line.\n"
    "# Edit freely; episodes keep the reason they were given.\n"
)


def _clean(reason: str) -> str:
    return " ".join(str(reason).split())


def load_failure_reasons(store_dir: str | os.PathLike) -> tuple[str, ...]:
    """The store's reasons in file order (duplicates and blank lines dropped), or the defaults."""
    path = Path(store_dir) / REASONS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return DEFAULT_FAILURE_REASONS
    reasons: list[str] = []
    for line in text.splitlines():
        reason = _clean(line)
        if reason and not reason.startswith("#") and reason not in reasons:
            reasons.append(reason)
    return tuple(reasons)


def save_failure_reasons(store_dir: str | os.PathLike, reasons: list[str] | tuple[str, ...]) -> Path:
    """Write the list (atomically: a crash leaves the old or the new file). Returns its path."""
    cleaned: list[str] = []
    for reason in reasons:
        text = _clean(reason)
        if text.startswith("#"):
            raise ValueError(f"A failure reason cannot start with '#': {reason!r}")
        if text and text not in cleaned:
            cleaned.append(text)
    path = Path(store_dir) / REASONS_FILE
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(_HEADER + "".join(f"{reason}\n" for reason in cleaned), encoding="utf-8")
    os.replace(temporary, path)
    return path
