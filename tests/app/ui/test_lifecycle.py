"""Opening and closing the studio: bad input at start, closing while recording, the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.studio.studio import Phase, Studio
from app.studio.events import Severity
from app.ui.main import main
from app.ui.main_window import StudioWindow
from recordings.reader import Episode
from recordings.schema import Label

ROOT = Path(__file__).resolve().parents[3]
WAIT_MS = 30_000


def test_a_broken_rig_file_is_reported_in_the_window_and_nothing_starts(qtbot, tmp_path):
    rig_file = tmp_path / "broken.toml"
    rig_file.write_text('[rig]\nkind = "simm"\n\n[control]\nrate_hz = 50.0\n')
    studio = Studio(rig_file, tmp_path / "store")
    window = StudioWindow(studio)
    qtbot.addWidget(window)
    window.show()
    studio.start()
    qtbot.waitUntil(lambda: studio.snapshot().phase is Phase.FAILED, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=WAIT_MS)
    text = window.banner.label.text()
    assert "broken.toml" in text and "simm" in text and "Fix the rig file" in text
    # Requests that need a running rig do nothing harmful and say why.
    studio.select_source("demo")
    assert any("not running yet" in e.message for e in studio.events.all())
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=WAIT_MS)
    assert studio.snapshot().phase is Phase.STOPPED


def test_closing_while_recording_asks_and_saves(qtbot, tmp_path):
    studio = Studio(ROOT / "configs" / "sim.toml", tmp_path)
    window = StudioWindow(studio)
    qtbot.addWidget(window)
    window.show()
    studio.start()
    assert studio.wait_until_running(60)
    asked = []

    def choose_success():
        asked.append(True)
        return Label.SUCCESS

    window.ask_recording_choice = choose_success
    window.start_recording()
    qtbot.waitUntil(lambda: studio.snapshot().recording.frames >= 10, timeout=WAIT_MS)
    window.close()
    assert asked == [True]
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=WAIT_MS)
    assert studio.snapshot().phase is Phase.STOPPED
    assert not studio.loop.running
    episodes = sorted(tmp_path.glob("episode_*.hdf5"))
    assert len(episodes) == 1 and not list(tmp_path.glob("*.partial"))
    with Episode.open(episodes[0]) as episode:
        assert episode.label is Label.SUCCESS and len(episode) >= 10


def test_cancelling_the_close_keeps_recording(qtbot, tmp_path):
    studio = Studio(ROOT / "configs" / "sim.toml", tmp_path)
    window = StudioWindow(studio)
    qtbot.addWidget(window)
    window.show()
    studio.start()
    assert studio.wait_until_running(60)
    window.ask_recording_choice = lambda: False
    window.start_recording()
    qtbot.waitUntil(lambda: studio.snapshot().recording.active, timeout=WAIT_MS)
    window.close()
    assert window.isVisible() and studio.snapshot().recording.active
    window.ask_recording_choice = lambda: None  # discard
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=WAIT_MS)
    assert not list(tmp_path.glob("episode_*.hdf5")) and not list(tmp_path.glob("*.partial"))
    assert any(e.severity is Severity.INFO and "discarded" in e.message for e in studio.events.all())


def test_main_rejects_a_missing_rig_file(capsys, tmp_path):
    assert main(["--rig", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert "nope.toml" in err and "--rig" in err


def test_main_help_names_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--rig", "--store", "--screenshot", "--after-s"):
        assert option in out
