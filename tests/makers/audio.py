"""Synthetic audio files for tests: tones and noise (soundfile), compressed audio (PyAV).

Every writer goes through an open handle from `atomic_write`, so file names
that are not valid UTF-8 work, and returns the float samples it wrote as
[frames, channels] so tests can compare against what they asked for.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from clipcli.store.atomic import atomic_write

# suffix -> (FFmpeg muxer, encoder, sample format the encoder takes)
COMPRESSED_FORMATS = {
    ".mp3": ("mp3", "libmp3lame", "fltp"),
    ".m4a": ("ipod", "aac", "fltp"),
    ".mp4": ("mp4", "aac", "fltp"),
    ".aac": ("adts", "aac", "fltp"),
}


def tone(freq: float, seconds: float, sr: int, amplitude: float = 0.5) -> np.ndarray:
    """A sine of `freq` Hz, float32 [round(seconds * sr)]."""
    times = np.arange(round(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * times)).astype(np.float32)


def write_wave(path: str | Path, samples: np.ndarray, sr: int, subtype: str | None = None) -> np.ndarray:
    """Write [frames] or [frames, channels] float samples with soundfile; format from the suffix."""
    samples = np.asarray(samples, dtype=np.float32)
    samples = samples[:, None] if samples.ndim == 1 else samples
    file_format = Path(path).suffix.lstrip(".").upper()
    with atomic_write(path) as handle:
        sf.write(handle, samples, sr, subtype=subtype, format=file_format)
    return samples


def write_tone(
    path: str | Path,
    freq: float,
    seconds: float,
    sr: int,
    channels: int = 1,
    subtype: str | None = None,
    amplitude: float = 0.5,
) -> np.ndarray:
    """The same tone on every channel (wav, flac, ogg, aiff... via soundfile)."""
    mono = tone(freq, seconds, sr, amplitude)
    return write_wave(path, np.repeat(mono[:, None], channels, axis=1), sr, subtype)


def write_noise(
    path: str | Path,
    seconds: float,
    sr: int,
    channels: int = 1,
    seed: int = 0,
    amplitude: float = 0.5,
    subtype: str | None = None,
) -> np.ndarray:
    """Uniform white noise in [-amplitude, amplitude], independent per channel."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(-amplitude, amplitude, size=(round(seconds * sr), channels))
    return write_wave(path, noise, sr, subtype)


def write_compressed(path: str | Path, samples: np.ndarray, sr: int) -> np.ndarray:
    """Encode [frames] or [frames, channels] float samples as mp3/m4a/mp4/aac with PyAV.

    Skips the calling test when the bundled FFmpeg lacks the encoder.
    """
    samples = np.asarray(samples, dtype=np.float32)
    samples = samples[:, None] if samples.ndim == 1 else samples
    muxer, encoder, sample_format = COMPRESSED_FORMATS[Path(path).suffix.lower()]
    _require_encoder(encoder)
    layout = {1: "mono", 2: "stereo"}[samples.shape[1]]
    with atomic_write(path) as handle, av.open(handle, "w", format=muxer) as container:
        stream = container.add_stream(encoder, rate=sr)
        stream.codec_context.layout = layout
        stream.codec_context.format = sample_format
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.T), format=sample_format, layout=layout)
        frame.sample_rate = sr
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return samples


def write_compressed_tone(path: str | Path, freq: float, seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    """A tone through `write_compressed`."""
    mono = tone(freq, seconds, sr)
    return write_compressed(path, np.repeat(mono[:, None], channels, axis=1), sr)


def write_video_without_audio(path: str | Path, frames: int = 4, size: int = 32) -> None:
    """A tiny mp4 with one video stream and no audio stream."""
    _require_encoder("mpeg4")
    with atomic_write(path) as handle, av.open(handle, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for index in range(frames):
            pixels = np.full((size, size, 3), 40 * index, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _require_encoder(name: str) -> None:
    """pytest.skip when this FFmpeg build cannot encode `name`."""
    try:
        av.codec.Codec(name, "w")
    except av.codec.codec.UnknownCodecError:
        pytest.skip(f"FFmpeg in this PyAV build has no {name} encoder")
