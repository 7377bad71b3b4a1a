"""The Training panel's settings as a `run.py train` command line, checked against the command's
real parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.studio.paths import RUN_PY
from app.studio.training.job import out_arg
from app.studio.training.settings import (
    DEVICES,
    PRESET_HINTS,
    PRESETS,
    TrainSettings,
    default_run_dir,
    parse_extra_args,
    parse_lr,
    resume_argv,
    train_argv,
)


def _settings(tmp_path, **changes) -> TrainSettings:
    fields = dict(episodes=(tmp_path / "episode_0.hdf5", tmp_path / "episode_1.hdf5"), labels=("success",),
                  run_dir=tmp_path / "run")
    fields.update(changes)
    return TrainSettings(**fields)


def test_the_command_passes_only_what_the_user_set_and_the_real_parser_takes_it(tmp_path):
    from app.studio.jobs.train import build_parser, options_from_args

    plain = train_argv(_settings(tmp_path))
    assert plain[:3] == [str(RUN_PY), "train", "--store"]
    args = build_parser().parse_args(plain[2:])
    assert args.store == [str(tmp_path / "episode_0.hdf5"), str(tmp_path / "episode_1.hdf5")]
    assert args.labels == "success" and args.preset == "tiny" and args.out == str(tmp_path / "run")
    assert args.steps is None and args.lr is None and not args.no_video_cotraining and not args.resume
    assert args.device == "auto"

    full = train_argv(_settings(tmp_path, labels=("success", "failure", "success"), preset="small", steps=300,
                                   batch_size=8, lr=3e-4, video_cotraining=False, checkpoint_every=50, device="cpu",
                                   extra_args=("--threads", "1", "--set", "num_layers=2")), resume=True)
    args = build_parser().parse_args(full[2:])
    assert args.labels == "failure,success"
    assert (args.preset, args.steps, args.batch_size, args.lr, args.checkpoint_every) == ("small", 300, 8, 3e-4, 50)
    assert args.no_video_cotraining and args.device == "cpu" and args.threads == 1 and args.resume
    assert args.overrides == ["num_layers=2"]
    hyper = options_from_args(args, full[2:]).hyper
    assert (hyper.steps, hyper.batch_size, hyper.lr, hyper.checkpoint_every) == (300, 8, 3e-4, 50)

    assert resume_argv(full) == full  # already there: not twice
    assert resume_argv(plain) == plain + ["--resume"]
    assert out_arg(plain) == str(tmp_path / "run")


@pytest.mark.parametrize("changes, words", [
    ({"episodes": ()}, "tick at least one episode"),
    ({"preset": "huge"}, "Unknown preset"),
    ({"steps": 0}, "steps must be 1 or more"),
    ({"lr": -1.0}, "positive number"),
    ({"device": "tpu"}, "Unknown device"),
    ({"extra_args": ("--out", "x")}, "--out is set by the panel"),
    ({"extra_args": ("--resume",)}, "--resume is set by the panel"),
    ({"extra_args": ("--episodes", "x")}, "--episodes is set by the panel"),
])
def test_settings_say_what_to_fix(tmp_path, changes, words):
    with pytest.raises(ValueError, match=words):
        _settings(tmp_path, **changes)


def test_field_parsers_say_what_to_fix():
    assert parse_lr("") is None and parse_lr(" 5e-4 ") == 5e-4
    with pytest.raises(ValueError, match="not a number"):
        parse_lr("fast")
    with pytest.raises(ValueError, match="positive"):
        parse_lr("0")
    assert parse_extra_args('--threads 2 --set "video.hidden_dim=64"') == ("--threads", "2", "--set", "video.hidden_dim=64")
    with pytest.raises(ValueError, match="quotes"):
        parse_extra_args('--set "a=1')
    with pytest.raises(ValueError, match="start with a flag"):
        parse_extra_args("threads 2")




def test_presets_and_devices_are_the_trainers():
    from model.config import PRESETS as MODEL_PRESETS
    from model.train_options import DEVICES as TRAINER_DEVICES

    assert set(PRESETS) == set(MODEL_PRESETS) and PRESETS[0] == "tiny" and set(PRESET_HINTS) == set(PRESETS)
    assert DEVICES == TRAINER_DEVICES
    assert default_run_dir("tiny", now=0, root=Path("/r")).name.startswith("tiny-19")
