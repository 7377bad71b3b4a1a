"""The Training panel's "Cameras and task" choice, without Qt: what the ticked episodes hold
(cameras with image sizes, tasks, action/state widths), which episode camera fills each view of
the preset's canvas, the task for files that name none, and what that means for the run.

The rules are the trainer's (`model.episode_inputs`): the map the panel proposes is the one
`run.py train` proposes in its camera_mismatch error, and what it sets becomes the flags a
terminal user types (`--camera-map`, `--default-task`: `app.studio.training.settings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from model.config import get_preset
from model.episode_inputs import CameraProposal, InputsSummary, propose_camera_map, source_camera

from app.studio.training.episode_rows import EpisodeRow


def preset_views(preset: str) -> tuple[str, ...]:
    """The canvas views of a training preset (cam_high, cam_left_wrist, cam_right_wrist)."""
    return tuple(get_preset(preset).camera_names)


def preset_task(preset: str) -> str:
    """The task a preset gives files that name none (its first task), "" if it has none."""
    tasks = get_preset(preset).encoder.tasks
    return tasks[0] if tasks else ""


@dataclass(frozen=True)
class InputsChoice:
    """The ticked episodes' inputs and how the run will read them.

    views: the canvas views; camera_map: view -> the episode camera the user chose for it (a view
    left out reads the camera of its own name); default_task: what the user typed for files
    without a task ("" = the preset's, `preset_task`); summary: the episodes together (see
    `InputsSummary`); proposal: a map that reads every ticked episode, when the chosen one does
    not (None when it does, or when the episodes share no camera)."""

    views: tuple[str, ...]
    camera_map: Mapping[str, str]
    default_task: str
    preset_task: str
    summary: InputsSummary
    proposal: CameraProposal | None

    @classmethod
    def of(cls, rows: Sequence[EpisodeRow], preset: str, camera_map: Mapping[str, str] | None = None,
           default_task: str = "") -> "InputsChoice":
        views = preset_views(preset)
        chosen = {v: c for v, c in (camera_map or {}).items() if v in views and c}
        summary = InputsSummary.of([r.inputs for r in rows if r.inputs is not None], views, chosen)
        proposal = (propose_camera_map(views, summary.common_cameras, keep=chosen)
                    if summary.lacking else None)
        return cls(views, chosen, default_task.strip(), preset_task(preset), summary, proposal)

    @property
    def task_for_untasked(self) -> str:
        return self.default_task or self.preset_task

    def reads(self, view: str) -> str:
        """The episode camera that fills `view`."""
        return source_camera(view, self.camera_map)

    def problem(self) -> str | None:
        """Why training cannot start with this choice (None when it can)."""
        lacking = self.summary.lacking
        if not lacking:
            return None
        missing = ", ".join(sorted({c for cameras in lacking.values() for c in cameras}))
        have = " / ".join(", ".join(names) or "none" for names in self.summary.camera_sets)
        text = (f"{len(lacking)} ticked episode(s) have no camera {missing} (they have {have}). Choose a camera "
                "for each view")
        if self.proposal is not None:
            return text + f', or press "{self.use_text()}".'
        return text + "; these episodes share no camera, so tick episodes that have the same cameras."

    def use_text(self) -> str:
        """The one-click button's text for the proposal."""
        return f"Use {self.proposal.short()}" if self.proposal is not None else ""

    def warnings(self) -> list[str]:
        """What the user should know before training (episodes of different shapes, a default task)."""
        warnings = list(self.summary.mixed_warnings())
        if self.summary.untasked:
            if self.default_task:
                warnings.append(f"{self.summary.untasked} episode(s) name no task: they are trained as "
                                f"'{self.default_task}'.")
            else:
                warnings.append(f"{self.summary.untasked} episode(s) name no task: they are trained as "
                                f"'{self.preset_task}' (the preset's task). Type their task if it is another.")
        return warnings

    def mapped(self) -> tuple[tuple[str, str], ...]:
        """The views read from a camera of another name: what `--camera-map` passes."""
        return tuple((v, c) for v, c in self.camera_map.items() if c != v)
