"""Whether a checkpoint fits a rig (model/compatibility.py): every kind of mismatch named from both
sides, the expert override and the cameras it reads then, and checkpoints with and without the
inputs.json the trainer writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.compatibility import PolicyInputs, RigInputs, compare, read_policy_inputs
from model.config import get_preset
from model.errors import CheckpointError, PolicyRigMismatch
from model.run_folder import CONFIG_FILE, INPUTS_FILE

VIEWS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
OURS = PolicyInputs(views=tuple((v, v) for v in VIEWS), image_sizes=tuple((v, ((240, 320),)) for v in VIEWS),
                    canvas_hw=(128, 160), tasks=("fold the towel",))
ACT = PolicyInputs(views=tuple((v, "top") for v in VIEWS), image_sizes=(("top", ((480, 640),)),),
                   canvas_hw=(128, 160), tasks=("fold the towel",), default_task="fold the towel")


def _sim(size=(240, 320), task="fold the towel", cameras=VIEWS, **dims) -> RigInputs:
    images = {c: np.zeros((*size, 3), np.uint8) for c in cameras}
    return RigInputs.of_images("sim-aloha", images, task, **dims)


def test_a_checkpoint_of_the_rigs_own_inputs_fits():
    fit = compare(OURS, _sim())
    assert fit.ok and fit.mismatches == () and dict(fit.camera_feeds) == {v: v for v in VIEWS}
    fit.require("ckpt")  # nothing raised


def test_other_cameras_are_refused_naming_both_sides_and_the_mapping():
    fit = compare(ACT, _sim())
    [mismatch] = fit.mismatches
    assert mismatch.what == "cameras"
    assert mismatch.checkpoint.startswith("reads camera(s) ['top'] (into every view: trained with --camera-map "
                                          "cam_high=top cam_left_wrist=top cam_right_wrist=top)")
    assert mismatch.rig == "has camera(s) ['cam_high', 'cam_left_wrist', 'cam_right_wrist']"
    with pytest.raises(PolicyRigMismatch, match=r"does not fit the rig sim-aloha: the checkpoint reads camera\(s\) "
                                                r"\['top'\].*the rig has camera\(s\).*--allow-mismatch") as caught:
        fit.require("runs/act/best")
    assert caught.value.mismatches == fit.mismatches
    # The expert override: each view reads the camera of its own name on this rig.
    fit.require("runs/act/best", allow_mismatch=True)
    assert dict(fit.camera_feeds) == {v: v for v in VIEWS}
    # On a rig with `top` (ACT's sim) it fits, the three views reading it; at another size it does not.
    assert compare(ACT, _sim((480, 640), cameras=("top",))).ok
    assert dict(compare(ACT, _sim((480, 640), cameras=("top",))).camera_feeds) == {v: "top" for v in VIEWS}
    [size] = compare(ACT, _sim((240, 320), cameras=("top",))).mismatches
    assert (size.what, size.checkpoint, size.rig) == ("image_size", "was trained on 'top' images of 640x480",
                                                      "gives 320x240")


def test_widths_and_task_are_compared_and_a_view_with_no_camera_is_refused_even_overridden():
    fit = compare(OURS, _sim(task="stack the cups", action_dim=16, state_dim=16))
    assert [(m.what, m.checkpoint, m.rig) for m in fit.mismatches] == [
        ("action_dim", "takes 14-D actions", "has 16-D actions"),
        ("state_dim", "takes 14-D states", "has 16-D states"),
        ("task", "was trained on task(s) ['fold the towel']", "asks for 'stack the cups'"),
    ]
    assert compare(OURS, _sim(task="")).ok  # a rig that asks no task: the policy's own
    lonely = compare(OURS, _sim(cameras=("cam_high",)))
    assert lonely.unfed_views() == ["cam_left_wrist", "cam_right_wrist"]
    with pytest.raises(PolicyRigMismatch, match=r"Even --allow-mismatch cannot run it.*'cam_left_wrist'"):
        lonely.require("ckpt", allow_mismatch=True)


def test_inputs_are_read_from_inputs_json_or_described_from_an_older_config(tmp_path):
    (tmp_path / INPUTS_FILE).write_text(json.dumps(ACT.to_dict()))
    assert read_policy_inputs(tmp_path) == ACT
    old = tmp_path / "old"
    old.mkdir()
    (old / CONFIG_FILE).write_text(json.dumps(get_preset("tiny").to_dict()))
    described = read_policy_inputs(old)
    assert described.views == tuple((v, v) for v in VIEWS) and described.image_sizes == () and not described.recorded
    assert described.tasks == ("fold the towel",) and described.canvas_hw == (128, 160)
    assert compare(described, _sim((480, 640))).ok  # sizes unknown: not compared
    (tmp_path / INPUTS_FILE).write_text('{"format": 1, "cameras": ')
    with pytest.raises(CheckpointError, match="record of the inputs it was trained on is damaged"):
        read_policy_inputs(tmp_path)
    with pytest.raises(CheckpointError, match="there is no config.json"):
        read_policy_inputs(tmp_path / "nothing")
