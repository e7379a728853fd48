"""Video frame sampling by name: the one list of strategies every video command picks from.

- `uniform`: n frames spread evenly over the whole video.
- `segment-centre`: ActionCLIP's test rule, the centre frame of each of n equal segments.
- `fps`: CLIP4Clip's loader, one frame per second, thinned to at most n.
- `keyframes`: the keyframe at or before each uniform time, decoding keyframes only;
  the fast, approximate stand-in for `uniform` (`--fast`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from clipcli.errors import BadInputError
from clipcli.media.frame_indices import SAMPLING_MODES
from clipcli.media.keyframes import sample_keyframes
from clipcli.media.video import SampledFrames, sample_frames

if TYPE_CHECKING:
    from clipcli.media.decoders import Decoder

UNIFORM, SEGMENT_CENTRE, FPS = SAMPLING_MODES
KEYFRAMES = "keyframes"
STRATEGIES: dict[str, Callable[[str | Path, int], SampledFrames]] = {
    **{mode: partial(sample_frames, mode=mode) for mode in SAMPLING_MODES},
    KEYFRAMES: sample_keyframes,
}
FAST_VARIANTS = {UNIFORM: KEYFRAMES}


def sample_video(path: str | Path, n: int, strategy: str, *, decoder: Decoder | None = None) -> SampledFrames:
    """The frames `strategy` picks from the video at `path`, upright RGB, in time order.

    `decoder` decodes the frames of the exact strategies; keyframes are always PyAV's (they skip the rest).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown sampling {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if strategy == KEYFRAMES:
        return sample_keyframes(path, n)
    return sample_frames(path, n, strategy, decoder=decoder)


def fast_variant(strategy: str) -> str:
    """The approximate, faster strategy that stands in for `strategy` (`--fast`)."""
    if strategy not in FAST_VARIANTS:
        raise BadInputError(
            f"--fast replaces {' or '.join(FAST_VARIANTS)} sampling; it cannot be combined with --sampling {strategy}"
        )
    return FAST_VARIANTS[strategy]
