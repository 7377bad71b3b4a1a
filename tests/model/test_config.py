"""The presets keep the released model's proportions (issue 12: the earlier tiny preset's narrow
attention and action expert made video co-training hurt)."""

from __future__ import annotations

import pytest

from model.config import PRESETS, PROPORTIONS


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_keeps_the_release_proportions(name):
    config = PRESETS[name]
    video, action = config.video.hidden_dim, config.action.hidden_dim
    assert config.num_heads * config.attn_head_dim == video * PROPORTIONS["attention_over_video"]
    assert action / video == pytest.approx(PROPORTIONS["action_over_video"], rel=0.05)
    assert config.action.ffn_dim == action * PROPORTIONS["ffn_over_width"]
    assert config.video.ffn_dim >= video * PROPORTIONS["ffn_over_width"]


def test_the_release_is_the_reference():
    release = PRESETS["fastwam-5b"]
    assert (release.num_heads, release.attn_head_dim, release.video.hidden_dim, release.action.hidden_dim) == (24, 128, 3072, 1024)
