"""The one registry of video sampling strategies behind retrieve, classify-action and --fast."""

from __future__ import annotations

import numpy as np
import pytest
from makers.video import write_video

from clipcli.errors import BadInputError
from clipcli.media import sampling
from clipcli.media.keyframes import sample_keyframes
from clipcli.media.video import sample_frames
from clipcli.pipelines import action, retrieve


def test_the_registry_names_every_strategy_the_commands_use():
    assert set(sampling.STRATEGIES) == {"uniform", "segment-centre", "fps", "keyframes"}
    assert set(retrieve.SAMPLINGS) <= set(sampling.STRATEGIES)
    assert action.SAMPLING == "segment-centre"


@pytest.mark.parametrize("strategy", ["uniform", "segment-centre", "fps"])
def test_sample_video_decodes_the_frames_of_the_named_rule(tmp_path, strategy):
    path = write_video(tmp_path / "clip.mp4", 30, fps=10)
    sampled = sampling.sample_video(path, 4, strategy)
    expected = sample_frames(path, 4, strategy)
    assert sampled.indices.tolist() == expected.indices.tolist()
    np.testing.assert_array_equal(sampled.frames, expected.frames)


def test_keyframes_is_the_fast_variant_of_uniform(tmp_path):
    path = write_video(tmp_path / "gop.mkv", 40, fps=10, gop=8)
    assert sampling.fast_variant("uniform") == "keyframes"
    fast = sampling.sample_video(path, 8, sampling.fast_variant("uniform"))
    assert fast.indices.tolist() == sample_keyframes(path, 8).indices.tolist()


def test_fast_refuses_a_strategy_it_cannot_stand_in_for():
    with pytest.raises(
        BadInputError, match="--fast replaces uniform sampling; it cannot be combined with --sampling fps"
    ):
        sampling.fast_variant("fps")


def test_an_unknown_strategy_is_named():
    with pytest.raises(ValueError, match="unknown sampling 'random'; expected one of uniform, segment-centre, fps"):
        sampling.sample_video("clip.mp4", 4, "random")
