"""Rig files: the shipped sim file opens; every mistake names the file, the line and the key."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from robot.control_loop import LoopConfig
from robot.rig_config import RecordingConfig, RigFileError, load_rig_file
from robot.rigs import RIG_KINDS, RigKind, open_rig, register_rig_kind, rig_kinds

ROOT = Path(__file__).resolve().parents[2]
SIM_TOML = ROOT / "configs" / "sim.toml"

GOOD = """\
[rig]
kind = "sim"
name = "bench"

[control]
rate_hz = 50
blend_s = 0.5

[recording]
store_dir = "episodes"
jpeg_quality = 80

[sim]
camera_names = ["cam_high"]
seed = 3
"""


def write(tmp_path, text, name="rig.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def line_number(text, needle):
    """1-based line of the first line containing `needle` (how a person would find it)."""
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def error_for(tmp_path, text, opener=open_rig) -> RigFileError:
    path = write(tmp_path, text)
    with pytest.raises(RigFileError) as info:
        opener(path)
    assert info.value.path == path
    assert str(path) in str(info.value)
    return info.value


def test_the_shipped_sim_file_opens_a_sim_rig():
    rig, rig_file = open_rig(SIM_TOML)
    from robot.sim import SimRig

    assert isinstance(rig, SimRig)
    assert rig.name == rig_file.rig.name == "sim-aloha"
    assert rig.control_rate_hz == rig_file.control.rate_hz == 50.0
    assert rig.camera_names == ("cam_high", "cam_left_wrist", "cam_right_wrist")
    assert isinstance(rig_file.control, LoopConfig)
    assert rig_file.recording.store_dir == (ROOT / "recordings" / "episodes").resolve()
    assert rig_file.recording.image_format == "jpeg"
    assert "sim" in rig_kinds()


def test_a_good_file_fills_the_dataclasses_by_field_name(tmp_path):
    rig, rig_file = open_rig(write(tmp_path, GOOD))
    assert rig_file.control.rate_hz == 50.0 and isinstance(rig_file.control.rate_hz, float)
    assert rig_file.control.blend_s == 0.5
    assert rig_file.control.max_joint_speed_rad_s == LoopConfig().max_joint_speed_rad_s  # default kept
    assert rig_file.recording == RecordingConfig(store_dir=tmp_path / "episodes", jpeg_quality=80)
    assert rig.config.camera_names == ("cam_high",) and rig.config.seed == 3
    assert rig.config.name == "bench"  # from [rig] name
    assert rig.config.task == "fold the towel"  # from [recording] task


def test_a_typo_in_a_key_names_key_line_and_the_fix(tmp_path):
    text = GOOD.replace("blend_s = 0.5", "blend_sec = 0.5")
    err = error_for(tmp_path, text)
    assert err.line == line_number(text, "blend_sec") and err.key == "blend_sec"
    assert f"line {err.line}" in str(err)
    assert "[control] blend_sec" in str(err) and "Did you mean blend_s?" in str(err)


def test_a_typo_in_a_sim_key_is_found_too(tmp_path):
    text = GOOD.replace("seed = 3", "sed = 3")
    err = error_for(tmp_path, text)
    assert err.line == line_number(text, "sed = 3")
    assert "Did you mean seed?" in str(err)


def test_a_wrong_type_names_the_expected_type(tmp_path):
    text = GOOD.replace("rate_hz = 50", 'rate_hz = "fifty"')
    err = error_for(tmp_path, text)
    assert err.line == line_number(text, "rate_hz") and err.key == "rate_hz"
    assert "must be a number" in str(err) and "'fifty'" in str(err)


def test_a_value_the_dataclass_refuses_points_at_its_line(tmp_path):
    text = GOOD.replace("rate_hz = 50", "rate_hz = 5000")
    err = error_for(tmp_path, text)
    assert err.line == line_number(text, "rate_hz") and err.key == "rate_hz"
    assert "ALOHA uses rate_hz = 50" in str(err)
    text = GOOD.replace("seed = 3", "seed = 3\nimage_height = 4")
    err = error_for(tmp_path, text)
    assert err.line == line_number(text, "image_height")


def test_a_rate_the_sim_refuses_points_at_the_users_control_line(tmp_path):
    text = GOOD.replace("rate_hz = 50", "rate_hz = 1000")  # the loop allows it, the sim does not
    err = error_for(tmp_path, text)
    assert err.line == line_number(text, "rate_hz = 1000") and err.key == "rate_hz"
    assert "[control] rate_hz: must be within 1..500 Hz" in str(err) and "[sim]" in str(err)
    assert "control_rate_hz" not in str(err)  # the internal field name means nothing to the user


def test_a_sim_rig_without_cameras_is_refused_because_episodes_need_one(tmp_path):
    text = GOOD.replace('camera_names = ["cam_high"]', "camera_names = []")
    err = error_for(tmp_path, text)
    assert err.line == line_number(text, "camera_names = []") and err.key == "camera_names"
    assert "at least one camera" in str(err) and '"cam_high"' in str(err)


def test_an_unknown_table_suggests_the_right_one(tmp_path):
    text = GOOD.replace("[sim]", "[simulation]")
    err = error_for(tmp_path, text)
    assert err.line == line_number(text, "[simulation]")
    assert "Did you mean sim?" in str(err) and "[control]" in str(err)


def test_an_unknown_kind_lists_the_kinds(tmp_path):
    text = GOOD.replace('kind = "sim"', 'kind = "simm"')
    err = error_for(tmp_path, text)
    assert err.line == line_number(text, "kind =") and err.key == "kind"
    assert "Did you mean sim?" in str(err)


def test_missing_rig_table_and_missing_required_key(tmp_path):
    err = error_for(tmp_path, GOOD.split("[control]")[1].join(["[control]", ""]))
    assert "[rig] table is missing" in str(err)
    text = GOOD.replace('kind = "sim"\n', "")
    err = error_for(tmp_path, text)
    assert "missing kind" in str(err) and err.line == line_number(text, "[rig]")


def test_toml_syntax_errors_carry_the_line(tmp_path):
    text = GOOD.replace("blend_s = 0.5", "blend_s = 0.5 s")
    err = error_for(tmp_path, text)
    assert err.line == line_number(text, "blend_s") and "not valid TOML" in str(err)


def test_settings_owned_by_another_table_are_refused(tmp_path):
    text = GOOD.replace("seed = 3", "seed = 3\ncontrol_rate_hz = 30.0")
    err = error_for(tmp_path, text)
    assert err.line == line_number(text, "control_rate_hz") and "[control] rate_hz" in str(err)


def test_a_top_level_key_must_sit_in_a_table(tmp_path):
    text = "operator = 'ana'\n" + GOOD
    err = error_for(tmp_path, text)
    assert err.line == 1 and "put it under one of" in str(err)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(RigFileError, match="no such rig file"):
        load_rig_file(tmp_path / "nope.toml")
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(RigFileError, match="UTF-8"):
        load_rig_file(path)


# --- a hardware kind, as the hardware engineer will add one: [[arms]] with its own dataclasses


@dataclass(frozen=True)
class Calibration:
    homing_offset_rad: tuple[float, ...] = ()


@dataclass(frozen=True)
class ArmConfig:
    name: str
    port: str
    ids: tuple[int, ...]
    calibration: Calibration = field(default_factory=Calibration)

    def __post_init__(self):
        if len(self.ids) != 9:
            raise ValueError(f"ids must list the 9 servo ids of an arm, got {len(self.ids)}")


class _Built:
    def __init__(self, arms):
        self.arms = arms


def build_fake_hardware(rig_file):
    return _Built(rig_file.array("arms", ArmConfig))


ARMS = """\
[rig]
kind = "test-hardware"

[[arms]]
name = "left"
port = "/dev/ttyDXL_puppet_left"
ids = [1, 2, 3, 4, 5, 6, 7, 8, 9]

[[arms]]
name = "right"
port = "/dev/ttyDXL_puppet_right"
ids = [1, 2, 3, 4, 5, 6, 7, 8, 9]

[arms.calibration]
homing_offset_rad = [0.0, 0.1]
"""


@pytest.fixture
def hardware_kind():
    register_rig_kind(RigKind("test-hardware", ("arms",), build_fake_hardware))
    yield
    RIG_KINDS.pop("test-hardware")


def test_arrays_of_tables_build_one_dataclass_each(tmp_path, hardware_kind):
    built, _ = open_rig(write(tmp_path, ARMS))
    assert [arm.name for arm in built.arms] == ["left", "right"]
    assert built.arms[1].calibration.homing_offset_rad == (0.0, 0.1)
    assert built.arms[0].ids == tuple(range(1, 10))


def test_errors_in_the_second_array_item_point_at_its_own_lines(tmp_path, hardware_kind):
    text = ARMS.replace('port = "/dev/ttyDXL_puppet_right"', 'prot = "/dev/ttyDXL_puppet_right"')
    err = error_for(tmp_path, text)
    assert err.line == line_number(text, "prot =") and "Did you mean port?" in str(err)
    assert "[arms[1]]" in str(err)

    right_ids = "ids = [1, 2, 3, 4, 5, 6, 7, 8, 9]\n\n[arms.calibration]"
    text = ARMS.replace(right_ids, "ids = [1, 2, 3]\n\n[arms.calibration]")
    err = error_for(tmp_path, text)
    assert err.line == text.splitlines().index("ids = [1, 2, 3]") + 1 and err.key == "ids"
    assert "9 servo ids" in str(err)

    text = ARMS.replace("homing_offset_rad = [0.0, 0.1]", 'homing_offset_rad = ["a"]')
    err = error_for(tmp_path, text)
    assert err.line == line_number(text, "homing_offset_rad") and "must be" in str(err)
