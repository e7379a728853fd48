"""clipcli.media.video: the papers' sampling rules, frame identity per codec, times, rotation and bad files."""

from __future__ import annotations

import os
import wave

import numpy as np
import pytest
from makers.video import (
    decoded_index,
    index_frame,
    packet_positions,
    truncated_copy,
    write_video,
    write_zero_frame_video,
)

from clipcli.errors import EXIT_BAD_INPUT, BadInputError
from clipcli.media import video
from clipcli.media.frame_indices import sample_indices
from clipcli.media.keyframes import sample_keyframes
from clipcli.media.video import VIDEO_EXTENSIONS, sample_frames
from clipcli.media.video_probe import probe_video, upright

FPS = 10.0
RED, BLUE = np.array([255, 0, 0]), np.array([0, 0, 255])

# (file name, write_video options): every container/codec pair the readers route differently.
FORMATS = {
    "mp4v": ("clip.mp4", {}),
    "mjpg": ("clip.avi", {}),
    "vp8": ("clip.webm", {"gop": 8}),
    "vp9": ("clip.webm", {"codec": "vp9", "gop": 8}),
    "h264-mkv": ("clip.mkv", {"gop": 8}),
    "h264-mp4": ("clip.mp4", {"codec": "h264", "gop": 8}),  # B-frames: decode order != display order
    "h264-ts": ("clip.ts", {"gop": 8}),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """One 40-frame 10 fps clip per format, written once for the module."""
    folder = tmp_path_factory.mktemp("clips")
    written = {}
    for name, (filename, options) in FORMATS.items():
        (folder / name).mkdir()
        written[name] = write_video(folder / name / filename, 40, fps=FPS, **options)
    return written


def assert_bad_input(path, *words: str, **options) -> None:
    """A one-line BadInputError that starts with the file name and says the problem."""
    with pytest.raises(BadInputError) as caught:
        sample_frames(path, 4, **options)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    assert caught.value.exit_code == EXIT_BAD_INPUT
    for word in words:
        assert word in message


def shown_indices(frames: np.ndarray) -> list[int]:
    return [decoded_index(frame) for frame in frames]


# ---------------------------------------------------------------- sample_indices


def test_uniform_spans_first_to_last_frame():
    # linspace(0, 99, 8) = 0, 14.14, 28.29, 42.43, 56.57, 70.71, 84.86, 99
    assert sample_indices(100, 8).tolist() == [0, 14, 28, 42, 57, 71, 85, 99]
    assert sample_indices(10, 4, "uniform").tolist() == [0, 3, 6, 9]


def test_uniform_rounds_halves_to_even():
    assert sample_indices(4, 3).tolist() == [0, 2, 3]  # 0, 1.5, 3
    assert sample_indices(6, 3).tolist() == [0, 2, 5]  # 0, 2.5, 5


def test_uniform_repeats_frames_when_asking_for_more_than_exist():
    # linspace(0, 2, 8) = 0, .29, .57, .86, 1.14, 1.43, 1.71, 2
    assert sample_indices(3, 8).tolist() == [0, 0, 1, 1, 1, 1, 2, 2]
    assert sample_indices(1, 8).tolist() == [0] * 8


def test_segment_centre_is_actionclip_test_rule():
    # 1-based ActionCLIP: int(i*N/T + (N/T - 1)/2) + 1; 0-based drops the + 1.
    # N=100, T=8: segment 12.5 frames, offset 5.75 -> 5.75, 18.25, 30.75, ...
    assert sample_indices(100, 8, "segment-centre").tolist() == [5, 18, 30, 43, 55, 68, 80, 93]
    n_frames, segments = 250, 16
    by_formula = [int(i * n_frames / segments + (n_frames / segments - 1) / 2) for i in range(segments)]
    assert sample_indices(n_frames, segments, "segment-centre").tolist() == by_formula


def test_segment_centre_short_videos_and_single_segment():
    # N <= T: ActionCLIP takes i*N // T.
    assert sample_indices(5, 8, "segment-centre").tolist() == [0, 0, 1, 1, 2, 3, 3, 4]
    assert sample_indices(8, 8, "segment-centre").tolist() == list(range(8))
    assert sample_indices(100, 1, "segment-centre").tolist() == [50]


def test_fps_mode_is_clip4clip_first_frame_of_each_second():
    # 10 s at 25 fps: frames 0, 25, ..., 225 -- ten of them, fewer than the 12 asked for.
    assert sample_indices(250, 12, "fps", fps=25.0).tolist() == list(range(0, 250, 25))
    # More than max_frames: CLIP4Clip keeps linspace(0, 9, 4, dtype=int) = 0, 3, 6, 9 of them.
    assert sample_indices(250, 4, "fps", fps=25.0).tolist() == [0, 75, 150, 225]


def test_fps_mode_truncates_frame_rate_like_clip4clip():
    # int(29.97) = 29: seconds start at frames 0, 29, ..., 290 (frame 319 is past 300).
    assert sample_indices(300, 64, "fps", fps=29.97).tolist() == list(range(0, 300, 29))


def test_fps_mode_other_rates():
    # rate 2 at 25 fps: interval 25 // 2 = 12, offsets 0 and 12 within each second.
    assert sample_indices(50, 12, "fps", fps=25.0, rate=2).tolist() == [0, 12, 25, 37]
    # rate 0.5: the first frame of every second second.
    assert sample_indices(250, 12, "fps", fps=25.0, rate=0.5).tolist() == [0, 50, 100, 150, 200]


@pytest.mark.parametrize(
    "arguments",
    [
        dict(frame_count=10, n=4, mode="random"),
        dict(frame_count=10, n=0),
        dict(frame_count=0, n=4),
        dict(frame_count=10, n=4, mode="fps"),
        dict(frame_count=10, n=4, mode="fps", fps=25.0, rate=1.5),
        dict(frame_count=10, n=4, mode="fps", fps=25.0, rate=0),
    ],
)
def test_sample_indices_rejects_bad_arguments(arguments):
    with pytest.raises(ValueError):
        sample_indices(**arguments)


# ---------------------------------------------------------------- probe_video


def test_probe_reports_count_rate_duration_size(clips):
    info = probe_video(clips["mp4v"])
    assert (info.frame_count, info.fps, info.duration) == (40, 10.0, 4.0)
    assert (info.width, info.height, info.rotation, info.codec) == (64, 48, 0, "mpeg4")


@pytest.mark.parametrize("name", ["h264-mkv", "vp8", "h264-ts"])
def test_probe_counts_packets_where_the_header_has_no_count(clips, name):
    info = probe_video(clips[name])
    assert info.frame_count == 40
    assert info.fps == 10.0  # exact, so CLIP4Clip's int(fps) is 10, not 9
    assert info.duration == pytest.approx(4.0)


# ---------------------------------------------------------------- sample_frames


@pytest.mark.parametrize("name", list(FORMATS))
@pytest.mark.parametrize("mode", ["uniform", "segment-centre"])
def test_frames_are_the_requested_ones(clips, name, mode):
    sampled = sample_frames(clips[name], 8, mode)
    expected = sample_indices(40, 8, mode)
    assert sampled.frames.shape == (8, 48, 64, 3) and sampled.frames.dtype == np.uint8
    assert sampled.indices.tolist() == expected.tolist()
    assert shown_indices(sampled.frames) == expected.tolist()
    np.testing.assert_allclose(sampled.timestamps, expected / FPS, atol=1e-4)
    assert sampled.timestamps.dtype == np.float64


@pytest.mark.parametrize("name", ["mp4v", "vp8", "h264-mp4"])
def test_frames_are_rgb(clips, name):
    frame = sample_frames(clips[name], 1).frames[0]
    assert np.abs(frame[-4, 4].astype(int) - RED).max() < 40
    assert np.abs(frame[-4, -4].astype(int) - BLUE).max() < 40


@pytest.mark.parametrize("name", ["mp4v", "mjpg", "h264-mkv", "h264-mp4"])
def test_decord_and_pyav_agree(clips, name):
    by_decord = sample_frames(clips[name], 8, "segment-centre", backend="decord")
    by_pyav = sample_frames(clips[name], 8, "segment-centre", backend="pyav")
    assert by_decord.indices.tolist() == by_pyav.indices.tolist()
    np.testing.assert_allclose(by_decord.timestamps, by_pyav.timestamps, atol=1e-4)
    assert shown_indices(by_decord.frames) == shown_indices(by_pyav.frames)
    assert np.abs(by_decord.frames.astype(int) - by_pyav.frames).mean() < 3


@pytest.mark.parametrize("name", ["vp8", "vp9", "h264-ts"])
def test_auto_keeps_webm_and_mpegts_away_from_decord(clips, name, monkeypatch):
    def refuse(*arguments):
        raise AssertionError("decord was used")

    monkeypatch.setattr(video, "read_decord", refuse)
    assert shown_indices(sample_frames(clips[name], 4).frames) == sample_indices(40, 4).tolist()


def test_auto_falls_back_to_pyav_when_decord_fails(clips, monkeypatch):
    def broken(*arguments):
        raise RuntimeError("decord failed")

    monkeypatch.setattr(video, "read_decord", broken)
    assert shown_indices(sample_frames(clips["mp4v"], 4).frames) == [0, 13, 26, 39]


def test_duplicates_are_copies_in_requested_order(tmp_path):
    path = write_video(tmp_path / "three.mp4", 3)
    sampled = sample_frames(path, 8)
    assert sampled.indices.tolist() == [0, 0, 1, 1, 1, 1, 2, 2]
    assert shown_indices(sampled.frames) == [0, 0, 1, 1, 1, 1, 2, 2]
    np.testing.assert_array_equal(sampled.frames[0], sampled.frames[1])


@pytest.mark.parametrize("filename", ["one.mp4", "one.mkv"])
def test_one_frame_video_gives_n_copies(tmp_path, filename):
    sampled = sample_frames(write_video(tmp_path / filename, 1), 8, "segment-centre")
    assert sampled.info.frame_count == 1
    assert sampled.frames.shape == (8, 48, 64, 3)
    assert sampled.indices.tolist() == [0] * 8 and shown_indices(sampled.frames) == [0] * 8
    np.testing.assert_array_equal(sampled.timestamps, np.zeros(8))


def test_fps_mode_on_a_file(tmp_path):
    path = write_video(tmp_path / "fps25.mkv", 60, fps=25.0)  # 2.4 s
    sampled = sample_frames(path, 12, "fps")
    assert sampled.indices.tolist() == [0, 25, 50]  # shorter than n: what exists
    assert shown_indices(sampled.frames) == [0, 25, 50]
    np.testing.assert_allclose(sampled.timestamps, [0.0, 1.0, 2.0], atol=1e-4)


@pytest.mark.parametrize("filename", ["vfr.mp4", "vfr.mkv"])
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_variable_frame_rate_timestamps_are_the_written_ones(tmp_path, filename, backend):
    gaps = np.tile([0.05, 0.15, 0.1, 0.3, 0.05], 6)[:29]
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    path = write_video(tmp_path / filename, 30, codec="h264", times=times, gop=6)
    sampled = sample_frames(path, 8, "segment-centre", backend=backend)
    expected = sample_indices(30, 8, "segment-centre")
    assert shown_indices(sampled.frames) == expected.tolist()
    np.testing.assert_allclose(sampled.timestamps, times[expected], atol=1e-4)


@pytest.mark.parametrize("rotation", [90, 270])
def test_rotated_video_comes_out_upright(tmp_path, rotation):
    path = write_video(tmp_path / "phone.mp4", 12, codec="h264", rotation=rotation)
    info = probe_video(path)
    assert (info.rotation, info.width, info.height) == (rotation, 48, 64)
    sampled = sample_frames(path, 4)
    assert sampled.frames.shape == (4, 64, 48, 3)
    # Undoing the display rotation gives back the frames as written.
    assert shown_indices(np.rot90(sampled.frames, -rotation // 90, axes=(1, 2))) == [0, 4, 7, 11]
    # The written bottom-left (red) corner lands bottom-right after 90 degrees counter-clockwise.
    red_corner = (-4, -4) if rotation == 90 else (3, 3)
    assert np.abs(sampled.frames[0][red_corner].astype(int) - RED).max() < 40


def test_upright_rotates_counter_clockwise():
    stored = index_frame(5)
    turned = upright(stored, 90)
    assert turned.shape == (64, 48, 3)
    np.testing.assert_array_equal(turned[-1, -1], stored[-1, 0])  # bottom-left -> bottom-right
    np.testing.assert_array_equal(upright(stored, 180), stored[::-1, ::-1])


def test_decord_backend_refuses_rotated_video(tmp_path):
    path = write_video(tmp_path / "phone.mp4", 4, codec="h264", rotation=90)
    assert_bad_input(path, "rotated", "pyav", backend="decord")


def test_non_utf8_file_name(tmp_path):
    path = os.path.join(tmp_path, os.fsdecode(b"caf\xe9.mp4"))
    try:
        os.rename(write_video(tmp_path / "plain.mp4", 10), path)
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 names")
    assert shown_indices(sample_frames(path, 3).frames) == [0, 4, 9]
    assert_bad_input(path, "non-UTF-8", backend="decord")
    assert_bad_input(os.path.join(tmp_path, os.fsdecode(b"missing\xff.mp4")), "no such file")


# ---------------------------------------------------------------- bad files


def test_missing_file_and_directory(tmp_path):
    assert_bad_input(tmp_path / "absent.mp4", "no such file")
    assert_bad_input(tmp_path, "directory")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.touch()
    assert_bad_input(path, "empty file")


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    assert_bad_input(path, "not a video")


def test_file_without_video_stream(tmp_path):
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(8000)
        sound.writeframes(np.zeros(800, np.int16).tobytes())
    assert_bad_input(path, "no video stream")


def test_zero_frame_video(tmp_path):
    assert_bad_input(write_zero_frame_video(tmp_path / "nothing.avi"), "no frames")


def test_truncated_mp4_without_header(tmp_path):
    # OpenCV and PyAV write the 'moov' index after the data: the first half has none.
    whole = write_video(tmp_path / "whole.mp4", 40)
    assert_bad_input(truncated_copy(whole, tmp_path / "half.mp4", 0.5), "truncated", "moov")


@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_truncated_mp4_with_header_missing_many_frames_raises(tmp_path, backend):
    # With the index first, the header still promises 60 frames; only 30 arrived.
    whole = write_video(tmp_path / "whole.mp4", 60, codec="mpeg4", gop=8, faststart=True)
    half = truncated_copy(whole, tmp_path / "half.mp4", packet_positions(whole)[30][0])
    assert_bad_input(half, "truncated", "only 30 of its 60 frames", backend=backend)


@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_truncated_mp4_missing_last_frame_clamps_to_what_decodes(tmp_path, backend):
    whole = write_video(tmp_path / "whole.mp4", 60, codec="mpeg4", gop=8, faststart=True)
    cut = truncated_copy(whole, tmp_path / "cut.mp4", packet_positions(whole)[-1][0])
    sampled = sample_frames(cut, 4, backend=backend)
    assert sampled.info.frame_count == 60
    assert sampled.indices.tolist() == [0, 20, 39, 58]  # 59 does not decode
    assert shown_indices(sampled.frames) == [0, 20, 39, 58]


def test_truncated_mkv_samples_over_the_frames_it_holds(tmp_path):
    whole = write_video(tmp_path / "whole.mkv", 60, codec="mpeg4", gop=8)
    half = truncated_copy(whole, tmp_path / "half.mkv", packet_positions(whole)[30][0])
    sampled = sample_frames(half, 4)
    assert sampled.info.frame_count == 30
    assert shown_indices(sampled.frames) == [0, 10, 19, 29]


def patched_copy(source, target, old: bytes, new: bytes):
    """A copy of `source` with every `old` byte string replaced by `new` (same length)."""
    data = source.read_bytes()
    assert old in data and len(old) == len(new)
    target.write_bytes(data.replace(old, new))
    return target


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_format_that_cannot_seek_is_decoded_in_order(tmp_path, backend):
    # FFmpeg's SWF demuxer has no seeking: av_seek_frame returns -1, which PyAV raises as PermissionError.
    path = write_video(tmp_path / "clip.swf", 20, codec="mjpeg")
    sampled = sample_frames(path, 4, "segment-centre", backend=backend)
    expected = sample_indices(20, 4, "segment-centre").tolist()
    assert sampled.indices.tolist() == expected
    assert shown_indices(sampled.frames) == expected


def test_decord_backend_failure_is_bad_input(tmp_path):
    path = write_video(tmp_path / "clip.swf", 20, codec="mjpeg")
    assert_bad_input(path, "decord cannot read", "pyav", backend="decord")


def test_unsupported_header_version_is_bad_input(tmp_path):
    # An 'mdhd' box of version 248: FFmpeg answers "not yet implemented" (PatchWelcomeError).
    whole = write_video(tmp_path / "whole.mp4", 10, codec="h264")
    odd = patched_copy(whole, tmp_path / "odd.mp4", b"mdhd\x00", b"mdhd\xf8")
    assert_bad_input(odd, "FFmpeg cannot read")


def test_unknown_video_codec_is_bad_input(tmp_path):
    whole = write_video(tmp_path / "whole.mp4", 10, codec="h264")
    unknown = patched_copy(whole, tmp_path / "unknown.mp4", b"avc1", b"zzzz")
    assert_bad_input(unknown, "no decoder")


def test_metadata_that_is_not_utf8_does_not_stop_decoding(tmp_path):
    whole = write_video(tmp_path / "whole.mp4", 10, codec="h264")
    odd = patched_copy(whole, tmp_path / "latin1.mp4", b"VideoHandler", b"VideoHandl\xe9r")
    assert shown_indices(sample_frames(odd, 3).frames) == [0, 4, 9]


def test_keyframe_sampling_reads_what_exact_sampling_reads(tmp_path):
    whole = write_video(tmp_path / "whole.mp4", 10, codec="mjpeg")  # every frame a keyframe
    odd = patched_copy(whole, tmp_path / "latin1.mp4", b"VideoHandler", b"VideoHandl\xe9r")
    assert shown_indices(sample_keyframes(odd, 2).frames) == [2, 7]  # at 0.25 s and 0.75 s
    unseekable = write_video(tmp_path / "clip.swf", 20, codec="mjpeg")
    assert shown_indices(sample_keyframes(unseekable, 4).frames) == sample_indices(20, 4).tolist()


def test_bad_arguments_are_value_errors(clips):
    with pytest.raises(ValueError, match="backend"):
        sample_frames(clips["mp4v"], 4, backend="opencv")
    with pytest.raises(ValueError, match="mode"):
        sample_frames(clips["mp4v"], 4, mode="random")


def test_video_extensions_are_lowercase_suffixes():
    assert all(suffix.startswith(".") and suffix == suffix.lower() for suffix in VIDEO_EXTENSIONS)
    assert {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".wmv", ".flv", ".3gp", ".ts"} <= set(
        VIDEO_EXTENSIONS
    )


def test_any_decord_failure_with_the_decord_backend_is_bad_input(tmp_path, monkeypatch):
    path = write_video(tmp_path / "clip.mp4", 20)

    def failing(info, wanted):
        raise ValueError("cannot reshape array of size 0")

    monkeypatch.setattr(video, "read_decord", failing)
    assert_bad_input(path, "decord cannot read it (ValueError)", "pyav", backend="decord")
