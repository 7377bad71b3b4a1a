"""Which episodes passed the deep check (every array read, every frame decoded), remembered
so that training does not decode every frame again at each start.

Keyed by (path, size, mtime, inode): any write to a file (a relabel, a restore from backup)
makes it be checked again. Only passes are remembered: a file that failed is checked again
the next time (it may have been restored meanwhile).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from recordings.check import check_episode

log = logging.getLogger(__name__)


class DeepCheckMemo:
    """The episodes that passed, in a JSON file (written whole, renamed into place). Not
    thread-safe."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            passed = json.loads(self.path.read_text())
        except (OSError, ValueError):
            passed = {}
        # A missing or damaged memo only means checking again; nothing is lost.
        self._passed: dict[str, list[int]] = passed if isinstance(passed, dict) else {}

    @staticmethod
    def _stamp(path: Path) -> list[int]:
        stat = path.stat()
        return [stat.st_size, stat.st_mtime_ns, stat.st_ino]

    def passed(self, path: Path) -> bool:
        try:
            return self._passed.get(str(path.resolve())) == self._stamp(path)
        except OSError:
            return False

    def remember(self, path: Path) -> None:
        try:
            self._passed[str(path.resolve())] = self._stamp(path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            try:
                with os.fdopen(fd, "w") as handle:
                    json.dump(self._passed, handle)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as error:  # a read-only cache folder costs time, not correctness
            log.warning("Could not remember the deep check of %s in %s: %s", path.name, self.path, error)


def deep_check(path: Path, memo: DeepCheckMemo | None = None) -> list[str]:
    """Why `path` cannot be trained on after reading every array and decoding every frame
    (empty when it can)."""
    if memo is not None and memo.passed(path):
        return []
    verdict = check_episode(path, deep=True)
    if verdict.ok and memo is not None:
        memo.remember(path)
    return list(verdict.reasons)
