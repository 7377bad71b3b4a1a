"""The episode view's loop markers on an episode recorded from the real loop on the sim rig (an
E-stop, a joint jogged into its limit, a dry spell): drawn on the timeline, named in the legend,
spelled out at the cursor; and said to be unknown for a file that does not record them."""

from __future__ import annotations

import pytest

from app.ui.workbench.episode_view import EpisodeViewWidget
from app.ui.workbench.timeline import MARKER_COLOURS
from loop_scenario import JOG_JOINT, ScenarioSteps, record_scenario
from recordings.timeline import MarkerKind

STEPS = ScenarioSteps()
ESTOP_STEP = STEPS.idle + STEPS.jog_into_limit + STEPS.dry + STEPS.jog_back
DRY_STEP = STEPS.idle + STEPS.jog_into_limit


@pytest.fixture
def view(qtbot):
    widget = EpisodeViewWidget()
    qtbot.addWidget(widget)
    widget.resize(1200, 800)
    widget.show()
    yield widget
    widget.close_episode()


def test_estop_clipping_and_hold_reason_are_drawn_named_and_spelled_out(view, tmp_path, qtbot):
    path = record_scenario(tmp_path)
    assert view.open_episode(path)
    legend = view.legend.text()
    assert "1 E-stop" in legend and "safety clipping" in legend and "1 hold" in legend and "unknown" not in legend

    view.seek(ESTOP_STEP + 5)
    qtbot.waitUntil(lambda: view.cursor == ESTOP_STEP + 5)
    assert view.cursor_markers.text().startswith(f"E-stop at step {ESTOP_STEP} (E-stop pressed")
    view.seek(DRY_STEP + 3)
    qtbot.waitUntil(lambda: view.cursor == DRY_STEP + 3)
    assert "the source ran dry" in view.cursor_markers.text()
    view.seek(DRY_STEP - 2)
    qtbot.waitUntil(lambda: view.cursor == DRY_STEP - 2)
    assert f"safety filter limited {JOG_JOINT}" in view.cursor_markers.text()

    # Drawn: the E-stop's bar in its colour above the bands, over the steps it lasted.
    timeline = view.timeline_widget
    image = timeline.grab().toImage()
    middle = timeline._x(ESTOP_STEP + STEPS.estop / 2)
    assert image.pixelColor(int(middle), 11).name() == MARKER_COLOURS[MarkerKind.ESTOP]
    clip = view.timeline.markers_of(MarkerKind.SAFETY_CLIP)[-1]
    assert image.pixelColor(int(timeline._x((clip.step + clip.end) / 2)), 11).name() == MARKER_COLOURS[MarkerKind.SAFETY_CLIP]
    assert "Unknown" not in timeline.toolTip()


def test_a_file_without_the_loop_record_says_it_is_unknown(view, tmp_path, act_file):
    path, _ = act_file(name="episode_0.hdf5", folder=tmp_path, n=20, shape=(48, 64))
    assert view.open_episode(path)
    assert "unknown" in view.legend.text() and "does not record" in view.legend.text()
    assert "does not record the loop's modes" in view.timeline_widget.toolTip()
    assert view.cursor_markers.text() == ""
