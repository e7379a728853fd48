"""Read audio files as mono float waveforms at a chosen sample rate.

soundfile (libsndfile) reads the uncompressed and lossless formats (and, with
libsndfile >= 1.1, MP3 and Opus); everything else (AAC in m4a/mp4, webm, video
soundtracks) goes through PyAV. Both are handed an open file object rather
than a name, so paths that are not valid UTF-8 work the same as any other.
"""

from __future__ import annotations

import math
import struct
import warnings
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from clipcli.errors import BadInputError

AUDIO_EXTENSIONS = (
    ".wav",
    ".flac",
    ".ogg",
    ".oga",
    ".opus",
    ".aif",
    ".aiff",
    ".au",
    ".caf",
    ".mp3",
    ".m4a",
    ".aac",
    ".wma",
    ".webm",
    ".mka",
    ".mp4",
    ".mkv",
    ".mov",
)

# Samples with no header saying their rate, width or channels: nothing can
# decode them without being told, and soundfile would ask for a sample rate.
_HEADERLESS_EXTENSIONS = (".raw", ".pcm")


class TruncatedAudioWarning(UserWarning):
    """A file holds less audio than its header declares; what is there is used."""


def load_audio(path: str | Path, sr: int) -> np.ndarray:
    """Decode `path` to a mono float32 waveform in [-1, 1] sampled at `sr` Hz.

    Channels are averaged. A truncated file yields the samples that decode
    (a WAV cut short says so with a TruncatedAudioWarning); a file where
    nothing decodes raises BadInputError.
    """
    channels_first, orig_sr = _decode_checked(path)
    mono = channels_first.mean(axis=0, dtype=np.float32)
    return np.clip(resample(mono, orig_sr, sr), -1.0, 1.0)


def load_channels(path: str | Path, sr: int) -> np.ndarray:
    """Decode `path` to float32 `[channels, samples]` at `sr` Hz, each channel kept (and not clipped).

    For evaluations whose official loader keeps stereo as two channels (UrbanSound8K).
    """
    channels_first, orig_sr = _decode_checked(path)
    return resample(channels_first, orig_sr, sr)


def _decode_checked(path: str | Path) -> tuple[np.ndarray, int]:
    """Samples as float32 [channels, frames] and their rate, refusing files with no or non-finite samples."""
    _check_file(path)
    channels_first, orig_sr = _decode(path)
    if channels_first.shape[1] == 0:
        raise BadInputError("contains no audio samples", path)
    if not np.isfinite(channels_first).all():
        raise BadInputError("contains non-finite (NaN or infinite) samples", path)
    return channels_first, orig_sr


def resample(wave: np.ndarray, orig_sr: int, sr: int) -> np.ndarray:
    """Polyphase resampling along the last axis; up/down are reduced by their gcd.

    48000 -> 44100 Hz upsamples by 147 and downsamples by 160, with the
    anti-aliasing FIR filter scipy designs for that ratio.
    """
    orig_sr, sr = _positive_rate(orig_sr), _positive_rate(sr)
    wave = np.asarray(wave, dtype=np.float32)
    if orig_sr == sr:
        return wave
    common = math.gcd(orig_sr, sr)
    return resample_poly(wave, sr // common, orig_sr // common, axis=-1).astype(np.float32)


def _positive_rate(rate: int) -> int:
    """Sample rates must be positive integers for an exact polyphase ratio."""
    if int(rate) != rate or rate <= 0:
        raise ValueError(f"sample rate must be a positive integer, got {rate!r}")
    return int(rate)


def _check_file(path: str | Path) -> None:
    """Reject what no decoder can read before any library gets to see it."""
    path = Path(path)
    if not path.exists():
        raise BadInputError("no such file", path)
    if not path.is_file():
        raise BadInputError("not a file", path)
    if path.stat().st_size == 0:
        raise BadInputError("empty file (0 bytes)", path)
    if path.suffix.lower() in _HEADERLESS_EXTENSIONS:
        raise BadInputError("headerless raw audio: convert it to WAV or FLAC first", path)


def _decode(path: str | Path) -> tuple[np.ndarray, int]:
    """Samples as float32 [channels, frames] and their rate: soundfile first, then PyAV."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as error:
        raise BadInputError(f"cannot open ({error.strerror or error})", path) from error
    with handle:
        _warn_if_wav_is_cut_short(handle, path)
        try:
            return _decode_soundfile(handle)
        except sf.SoundFileError:
            handle.seek(0)
            return _decode_pyav(handle, path)


def _warn_if_wav_is_cut_short(handle: BinaryIO, path: str | Path) -> None:
    """Compare a RIFF WAV's declared data size with the bytes that follow it.

    libsndfile quietly reads what is there; a download cut short should not
    pass for a short recording. Streaming writers that leave the size at 0 or
    0xFFFFFFFF are not truncated.
    """
    size = handle.seek(0, 2)
    handle.seek(0)
    header = handle.read(12)
    if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        handle.seek(0)
        return
    position = 12
    while position + 8 <= size:
        handle.seek(position)
        chunk_id, chunk_size = struct.unpack("<4sI", handle.read(8))
        if chunk_id == b"data":
            present = size - position - 8
            if 0 < chunk_size < 0xFFFFFFFF and present < chunk_size:
                warnings.warn(
                    f"{path}: truncated WAV: {present} of the {chunk_size} audio bytes its header declares; "
                    "using what is there",
                    TruncatedAudioWarning,
                    stacklevel=2,
                )
            break
        position += 8 + chunk_size + (chunk_size & 1)
    handle.seek(0)


def _decode_soundfile(handle: BinaryIO) -> tuple[np.ndarray, int]:
    """libsndfile scales integer PCM to [-1, 1) itself (int16 divides by 32768)."""
    frames_by_channel, rate = sf.read(handle, dtype="float32", always_2d=True)
    return np.ascontiguousarray(frames_by_channel.T), rate


def _decode_pyav(handle: BinaryIO, path: str | Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream with FFmpeg, as float planar at its own rate.

    Tags that are not valid UTF-8 are read with replacement characters. FFmpeg
    seeking where a damaged header points (past the end) fails in Python's
    file object, as an OSError.
    """
    try:
        container = av.open(handle, mode="r", metadata_errors="replace")
    except (av.FFmpegError, OSError) as error:
        raise BadInputError("not a readable audio file (wrong format, truncated or corrupt)", path) from error
    with container:
        if not container.streams.audio:
            raise BadInputError("no audio stream", path)
        stream = container.streams.audio[0]
        if stream.codec_context is None:
            raise BadInputError("no decoder for its audio codec (unknown or damaged codec tag)", path)
        chunks = _decode_stream(container, stream)
    if not chunks:
        raise BadInputError("no audio could be decoded (truncated or corrupt)", path)
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), stream.codec_context.sample_rate


def _decode_stream(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> list[np.ndarray]:
    """[channels, samples] chunks in order; a decode error ends the stream early."""
    resampler = av.AudioResampler(format="fltp")
    chunks: list[np.ndarray] = []
    try:
        for frame in container.decode(stream):
            chunks.extend(converted.to_ndarray() for converted in resampler.resample(frame))
        chunks.extend(converted.to_ndarray() for converted in resampler.resample(None))
    except av.FFmpegError:
        pass  # keep what decoded before the damage, as libsndfile does for short files
    return [chunk for chunk in chunks if chunk.shape[1] > 0]
