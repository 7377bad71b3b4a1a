"""JSON values as the studio writes them: always valid JSON. The one encoder of the run folder's
files and train.jsonl (`model.run_folder`) and of every job's JSON lines on stdout
(`app.studio.jobs.console`, `run.py eval`). Torch-free.

`json.dumps` writes NaN and Infinity for non-finite floats, which no JSON parser accepts (the
studio's training panel, `jq`, a browser). A loss that is not known yet (a resumed run that had
nothing left to train) or that diverged is written as null instead.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float (NaN, +-inf; numpy scalars too) replaced by None,
    numpy scalars and arrays turned into Python values, paths into strings, tuples into lists."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def json_line(record: dict[str, Any]) -> str:
    """One line of valid JSON (no trailing newline); raises ValueError rather than emit NaN."""
    return json.dumps(json_safe(record), allow_nan=False)
