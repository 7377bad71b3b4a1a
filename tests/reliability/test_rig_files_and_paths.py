"""Fault 5: `camera_names = []` with JPEG crashed the writer ("max() arg is an empty sequence")
and the rig-file check let it through. Fault 8: task or operator strings with ANSI/OSC escape
codes were printed raw by `episodes list`. Fault 9: a missing or wrong store path read as "No
episodes" (exit 0), `record --store FILE` said "[Errno 17] File exists", and a read-only
`train --out` was reported as an internal bug."""

from __future__ import annotations

import io
import json
import os

import h5py
import pytest

from app.studio.jobs import record
from app.studio.jobs import episodes as cli
from model.resume import prepare_output_folder
from model.errors import OutputFolderError
from recordings import schema
from recordings.writer import EpisodeWriter
from robot.rig_config import RigFileError
from robot.rigs import open_rig

NO_CAMERAS = """\
[rig]
kind = "sim"

[recording]
image_format = "jpeg"

[sim]
camera_names = []
"""


def run(*argv):
    out = io.StringIO()
    code = cli.main(list(argv), out=out)
    return code, out.getvalue()


def test_a_rig_file_without_cameras_is_refused_with_file_line_and_fix(tmp_path, capsys):
    rig = tmp_path / "nocam.toml"
    rig.write_text(NO_CAMERAS)
    with pytest.raises(RigFileError) as info:
        open_rig(rig)
    assert info.value.line == 8 and info.value.key == "camera_names"
    assert "at least one camera" in str(info.value)
    # `record` says the same and exits, without starting anything.
    assert record.main(["--rig", str(rig), "--seconds", "1", "--store", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert "nocam.toml, line 8: [sim] camera_names: is empty" in err and "Traceback" not in err


def test_the_writer_refuses_no_cameras_before_recording(tmp_path):
    with pytest.raises(ValueError, match="at least one camera"):
        EpisodeWriter(tmp_path, [], image_format="jpeg")


def test_strings_from_files_are_printed_with_control_characters_escaped(record_episode):
    path, _ = record_episode(n=4)
    # Written by some other tool: the studio itself refuses control characters in a task.
    with h5py.File(path, "r+") as root:
        root.attrs[schema.ATTR_TASK] = "fold\x1b]0;owned\x07 the \x1b[31mtowel"
        root.attrs[schema.ATTR_OPERATOR] = "\x1b[2Jeve\u202e"
    code, text = run("list", "--store", str(path.parent))
    assert code == 0
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "fold\\x1b]0;owned\\x07" in text and "\\x1b[2Jeve" in text
    code, text = run("list", "--store", str(path.parent), "--json")
    assert "\x1b" not in text and json.loads(text)["episodes"][0]["task"].startswith("fold\x1b]0;owned")


def test_a_file_name_with_escapes_is_printed_escaped(record_episode, tmp_path):
    path, _ = record_episode(n=3)
    odd = tmp_path / "evil\x1b[31m.hdf5"
    odd.write_bytes(path.read_bytes()[:1000])
    code, text = run("check", str(odd))
    assert code == 1 and "\x1b" not in text and "evil\\x1b[31m.hdf5" in text


@pytest.mark.parametrize("command", ["list", "check", "recover"])
def test_a_missing_store_is_an_error_not_an_empty_store(tmp_path, command):
    code, text = run(command, "--store", str(tmp_path / "typo"))
    assert code == 2 and "There is no folder" in text and "typo" in text
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, text = run(command, "--store", str(afile))
    assert code == 2 and "is a file, not a folder" in text


def test_record_into_a_file_says_so(tmp_path, capsys):
    afile = tmp_path / "episodes.txt"
    afile.write_text("not a folder")
    assert record.main(["--seconds", "1", "--store", str(afile)]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder: --store takes the folder" in err and "Errno" not in err


def test_a_read_only_output_folder_is_a_usage_problem(tmp_path, small_filesystem):
    afile = tmp_path / "out.txt"
    afile.write_text("")
    with pytest.raises(OutputFolderError, match="is a file, not a folder"):
        prepare_output_folder(afile)
    assert prepare_output_folder(tmp_path / "ok" / "run").is_dir()
    folder = tmp_path / "runs"
    folder.mkdir()
    os.chmod(folder, 0o555)
    by_permissions = not os.access(folder, os.W_OK)
    if not by_permissions:  # root ignores permission bits: a read-only mount then
        os.chmod(folder, 0o755)
        folder = small_filesystem.mount("1M")
        small_filesystem.read_only(folder)
    try:
        with pytest.raises(OutputFolderError) as info:
            prepare_output_folder(folder / "run1")
    finally:
        if by_permissions:
            os.chmod(folder, 0o755)
    assert str(info.value).startswith("--out ") and "Pass a folder you can write to with --out" in str(info.value)
    assert "Read-only file system" in str(info.value) or "Permission denied" in str(info.value)
