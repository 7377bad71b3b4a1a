"""The Policy panel in the real window on the real simulated rig (MuJoCo), the real control loop and
the tiny policy: choose and load a checkpoint through the panel, hand the arm to it with the
Autonomous key, see the mode change everywhere and the plan curve fill, take over and hand back
with the take-over key, and let go. One window for the module (the sim costs seconds to build).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.studio.snapshot import AutonomyState, Phase
from app.studio.studio import Studio
from app.ui.main_window import StudioWindow
from robot.types import Mode

RIG = Path(__file__).resolve().parents[3] / "configs" / "sim.toml"
WAIT_MS = 60_000  # a shared 2-core machine may run the sim at a fraction of real time
#: The stale-camera limit of these tests: a loaded test machine can starve the sim's render
#: thread for half a second (tests/model/test_runner.py checks the limit itself).
STALE_S = 5.0


@pytest.fixture(scope="module")
def shared(qapp, tmp_path_factory):
    studio = Studio(RIG, tmp_path_factory.mktemp("store"))
    window = StudioWindow(studio)
    window.show()
    studio.start()
    assert studio.wait_until_running(90), [e.message for e in studio.events.all()]
    yield window, studio
    window.close()
    if studio.snapshot().phase is not Phase.STOPPED:
        studio.shutdown(recording_label=None)


def points(curve) -> int:
    x, _ = curve.getData()
    return 0 if x is None else len(x)


def test_load_drive_take_over_hand_back_and_let_go_from_the_window(shared, qtbot, tiny_checkpoint_h32):
    window, studio = shared
    panel = window.policy.panel
    keys_target = window.control_panel.task_edit  # the shortcuts work while typing, too
    # Before anything is loaded the Autonomous key is refused, with what to do.
    qtbot.keyClick(keys_target, Qt.Key.Key_F10)
    qtbot.waitUntil(lambda: "no policy is loaded" in panel.message_label.text(), timeout=WAIT_MS)
    assert "Choose a checkpoint" in panel.message_label.text()
    assert not panel.autonomous_button.isEnabled()

    window.policy.show(tiny_checkpoint_h32)
    assert window.policy.dock.isVisible()
    assert "tiny" in panel.info_label.text() and "32 actions per plan" in panel.info_label.text()
    panel.device_combo.setCurrentText("cpu")
    panel.strategy_combo.setCurrentText("ensemble")
    panel.image_age_spin.setValue(STALE_S)
    qtbot.mouseClick(panel.load_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: studio.snapshot().autonomy.state is AutonomyState.READY, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: panel.autonomous_button.isEnabled(), timeout=WAIT_MS)
    assert "Policy ready: tiny" in panel.message_label.text()
    assert window.policy.button.text() == "Policy: ready (tiny)"

    qtbot.keyClick(keys_target, Qt.Key.Key_F10)  # Autonomous
    qtbot.waitUntil(lambda: window.status.mode.text() == "AUTONOMOUS (policy drives)", timeout=WAIT_MS)
    assert studio.snapshot().mode is Mode.POLICY
    assert window.control_panel.mode_badge.text() == "AUTONOMOUS (policy drives)"
    assert panel.autonomous_button.isChecked() and panel.take_over_button.isEnabled()
    assert not panel.hand_back_button.isEnabled()
    # The window's own paint timer draws the plan ahead of now and the latency of each chunk.
    qtbot.waitUntil(lambda: points(panel.plots.plan_curve) == 32, timeout=WAIT_MS)
    x, y = panel.plots.plan_curve.getData()
    assert x[-1] > 0 and np.all(np.isfinite(y))
    qtbot.waitUntil(lambda: points(panel.plots.inference_curve) >= 2, timeout=WAIT_MS)
    assert "inference p50" in panel.plots.readout.text()

    qtbot.keyClick(keys_target, Qt.Key.Key_F11)  # take over
    qtbot.waitUntil(lambda: window.status.mode.text() == "INTERVENTION (you drive)", timeout=WAIT_MS)
    assert window.control_panel.mode_badge.text() == "INTERVENTION (you drive)"
    assert panel.hand_back_button.isEnabled() and not panel.take_over_button.isEnabled()
    assert studio.snapshot().autonomy.state is AutonomyState.INTERVENTION

    qtbot.keyClick(keys_target, Qt.Key.Key_F11)  # hand back
    qtbot.waitUntil(lambda: window.status.mode.text() == "AUTONOMOUS (policy drives)", timeout=WAIT_MS)

    qtbot.keyClick(keys_target, Qt.Key.Key_F10)  # let go: the arm holds
    qtbot.waitUntil(lambda: window.status.mode.text() == "HOLD", timeout=WAIT_MS)
    assert studio.snapshot().autonomy.state is AutonomyState.READY
    assert not panel.autonomous_button.isChecked() and panel.load_button.isEnabled()


def test_evaluate_in_sim_counts_rollouts_and_can_be_cancelled(qtbot, tiny_checkpoint, tmp_path):
    """The real `run.py eval` as the panel's child process, on the real sim rig."""
    from app.studio.eval_job import EvalRequest, EvalState
    from app.studio.evaluation import wilson_interval
    from app.ui.policy.evaluation import EvalBoxWidget

    def request(episodes, first_seed, max_seconds):
        return EvalRequest(tiny_checkpoint, episodes, first_seed, "ensemble", RIG, device="cpu",
                           max_seconds=max_seconds, save_dir=tmp_path / f"rollouts-{episodes}")

    box = EvalBoxWidget(request)
    qtbot.addWidget(box)
    box.episodes_spin.setValue(2)
    box.seconds_spin.setValue(0.5)
    assert not box.review_button.isEnabled()
    qtbot.mouseClick(box.start_button, Qt.MouseButton.LeftButton)
    assert box.running and not box.start_button.isEnabled() and box.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not box.running, timeout=120_000)
    progress = box.progress
    assert progress.state is EvalState.FINISHED, (progress.text, list(box._stderr))
    lo, hi = wilson_interval(progress.tally.successes, 2)
    assert progress.summary["success_ci95"] == [round(lo, 4), round(hi, 4)]
    assert box.result_label.text().startswith("Done. 2 of 2 rollouts: 0 folded")  # a random policy folds nothing
    assert box.bar.value() == 2 and box.review_button.isEnabled()
    assert len(list((tmp_path / "rollouts-2").glob("*.hdf5"))) == 2

    box.episodes_spin.setValue(100)
    qtbot.mouseClick(box.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: box.progress.tally.episodes >= 1, timeout=120_000)
    qtbot.mouseClick(box.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not box.running, timeout=30_000)
    assert box.progress.state is EvalState.CANCELLED
    assert box.result_label.text().startswith("Cancelled.") and "of 100 rollouts" in box.result_label.text()
    assert box.start_button.isEnabled() and not box.cancel_button.isEnabled()
