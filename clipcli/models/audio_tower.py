"""ESResNeXt-fbsp, AudioCLIP's audio tower (Guzhov et al. 2021), with the official parameter names.

A raw waveform on the int16 scale is cut into Blackman-Harris-windowed frames, sent through a
trainable complex filter bank (`LinearFBSP`: frequency B-spline wavelets that start out as DFT
bins), turned into log power, and the 1023 lowest bins are stacked as three 341-bin "RGB" bands
for a ResNeXt-50 (32x4d) whose stages are gated by sigmoid attention maps. Every state-dict key
and shape equals the `audio.*` entries of the released AudioCLIP checkpoints.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import get_window
from torch import nn

SAMPLE_RATE = 44100  # both official protocols (the dataset classes' 22050 default is a trap)
N_FFT = 2048
HOP_LENGTH = 561  # 12.7 ms
WIN_LENGTH = 1654  # 37.5 ms
WINDOW = "blackmanharris"
N_BINS = N_FFT // 2 + 1  # 1025 one-sided bins
N_BANDS = 3  # the three "RGB" channels of the spectrogram image
BAND_HEIGHT = N_BINS // N_BANDS  # 341; bins 1023 and 1024 are dropped
LOG10_EPS = 1e-18  # replaces exact zeros of the power before log10
FBSP_EPS = 1e-8
INT16_MIN, INT16_MAX = -32768.0, 32767.0


def int16_to_unit(waveform: torch.Tensor) -> torch.Tensor:
    """The official `scale(x, -32768, 32767, -1, 1)`, in its order of operations.

    This is not `x / 32768`: it maps 0 to 1/65535, a DC offset the network was trained with.
    """
    return ((waveform - INT16_MIN) * 2.0) / (INT16_MAX - INT16_MIN) + -1.0


def frame_count(num_samples: int) -> int:
    """Frames that tile a signal: `1 + ceil((T - 1654) / 561)`, at least one (392 for 5 s)."""
    if num_samples <= WIN_LENGTH:
        return 1
    return 1 + math.ceil((num_samples - WIN_LENGTH) / HOP_LENGTH)


def frame_signal(signal: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """`[N, T]` -> windowed frames `[N, F, 1654]`, the signal zero-padded symmetrically to fit them.

    Where the padding is odd the extra zero goes to the right, as in the official `frame_signal`.
    """
    frames = frame_count(signal.shape[-1])
    padding = (frames - 1) * HOP_LENGTH + WIN_LENGTH - signal.shape[-1]
    padded = F.pad(signal, [padding // 2, padding - padding // 2])
    return padded.unfold(-1, WIN_LENGTH, HOP_LENGTH) * window


def _sinc(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised sinc, sin(x)/x, with 1 at exactly 0."""
    return torch.where(x == 0, torch.ones_like(x), torch.sin(x) / x)


class LinearFBSP(nn.Module):
    """Complex linear map from N samples to `out_features` bins, one FBSP wavelet per bin.

    Filter k is `sqrt(fb) * sinc(fb t / m)^m * exp(-i fc t) / sqrt(N)` with `t = pi linspace(-1, 1, N)`.
    At the initial values (m=0, fb=1, fc=k) it is the k-th DFT-like bin. The kernel is built in the
    input's dtype following the official order of operations, so float32 runs match it bit for bit
    (other orders move the embedding by ~1e-3); the phase `fc t` reaches 3200 rad, so never fp16.
    """

    def __init__(self, out_features: int = N_BINS, normalized: bool = True):
        super().__init__()
        self.out_features = out_features
        self.normalized = normalized
        self.m = nn.Parameter(torch.zeros(out_features))  # B-spline order
        self.fb = nn.Parameter(torch.ones(out_features))  # bandwidth
        self.fc = nn.Parameter(torch.arange(out_features, dtype=torch.float32))  # centre frequency
        self.bias = nn.Parameter(torch.empty(0))  # AudioCLIP builds the layer without bias: 0 elements

    def kernel(self, in_features: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Filter weights `[out_features, in_features, 2]` (real, imaginary)."""
        device = self.fc.device
        t = math.pi * torch.linspace(-1.0, 1.0, in_features, dtype=dtype, device=device).reshape(1, -1, 1) + FBSP_EPS
        m, fb, fc = (p.to(dtype).reshape(-1, 1, 1) for p in (self.m, self.fb, self.fc))
        carrier_re, carrier_im = torch.cos(fc * t), -torch.sin(fc * t)
        envelope = _sinc(fb * t / (m + FBSP_EPS))
        # envelope ** m for a real base of either sign, as a complex power: |e|^m * exp(i m arg(e)).
        magnitude = (envelope**2) ** 0.5
        phase = torch.zeros_like(envelope).atan2(envelope)
        power_magnitude = (magnitude**2) ** (0.5 * m)
        power_re, power_im = power_magnitude * torch.cos(m * phase), power_magnitude * torch.sin(m * phase)
        gain = fb.sqrt()
        weights = gain * torch.cat(
            (power_re * carrier_re - power_im * carrier_im, power_re * carrier_im + power_im * carrier_re), dim=-1
        )
        return weights / in_features**0.5 if self.normalized else weights

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Real frames `[..., N]` -> complex bins `[..., out_features, 2]`."""
        weights = self.kernel(frames.shape[-1], frames.dtype)
        stacked = torch.cat((weights[..., 0], weights[..., 1]), dim=0)  # one matmul for both parts
        out = F.linear(frames, stacked)
        return torch.stack(out.split(self.out_features, dim=-1), dim=-1)


class Attention2d(nn.Module):
    """Sigmoid gate for a ResNet stage, computed from the stage's input (max-pooled to its output size)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], padding: tuple[int, int]):
        super().__init__()
        self.conv_depth = nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding, groups=in_channels)
        self.conv_point = nn.Conv2d(in_channels, out_channels, (1, 1))
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        x = F.adaptive_max_pool2d(x, size)
        return torch.sigmoid(self.bn(self.conv_point(self.conv_depth(x))))


class Bottleneck(nn.Module):
    """torchvision's ResNeXt bottleneck (stride on the grouped 3x3), same parameter names."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, groups: int = 32, base_width: int = 4):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = None
        if stride != 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * self.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * self.expansion),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + identity)


def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [Bottleneck(inplanes, planes, stride)]
    layers += [Bottleneck(planes * Bottleneck.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class ESResNeXtFBSP(nn.Module):
    """The AudioCLIP audio tower: int16-scale waveform `[B, T]` or `[B, C, T]` at 44.1 kHz -> `[B, embed_dim]`.

    The output is not normalised (AudioCLIP's `forward` normalises it). Channels of a
    multi-channel input run separately and their pooled features are summed before `fc`,
    so a duplicated stereo signal is not the same as its mono version.
    """

    window: torch.Tensor  # a buffer, so it follows the module's device

    def __init__(self, embed_dim: int = 1024, layers: tuple[int, int, int, int] = (3, 4, 6, 3)):
        super().__init__()
        self.fbsp = LinearFBSP(N_BINS, normalized=True)
        window = get_window(WINDOW, WIN_LENGTH, fftbins=True)  # periodic Blackman-Harris, as the official buffer
        self.register_buffer("window", torch.from_numpy(np.asarray(window)).float())
        self.conv1 = nn.Conv2d(N_BANDS, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = _stage(64, 64, layers[0], 1)
        self.att1 = Attention2d(64, 256, (3, 1), (1, 0))
        self.layer2 = _stage(256, 128, layers[1], 2)
        self.att2 = Attention2d(256, 512, (1, 5), (0, 2))
        self.layer3 = _stage(512, 256, layers[2], 2)
        self.att3 = Attention2d(512, 1024, (3, 1), (1, 0))
        self.layer4 = _stage(1024, 512, layers[3], 2)
        self.att4 = Attention2d(1024, 2048, (1, 5), (0, 2))
        self.att5 = Attention2d(2048, 2048, (3, 5), (1, 2))
        self.fc = nn.Linear(2048, embed_dim)

    def spectrogram(self, signal: torch.Tensor) -> torch.Tensor:
        """Signal in [-1, 1] `[N, T]` -> complex spectrogram `[N, 1025, frames, 2]`."""
        frames = frame_signal(signal, self.window.to(signal.dtype))
        side = (N_FFT - WIN_LENGTH) // 2
        frames = F.pad(frames, [side, N_FFT - WIN_LENGTH - side])  # centred in the 2048-sample FFT frame
        return self.fbsp(frames).transpose(-2, -3)

    def log_power_bands(self, waveform: torch.Tensor) -> torch.Tensor:
        """Int16-scale waveform `[N, T]` -> the network's input image `[N, 3, 341, frames]` in dB (no mel scale)."""
        spec = self.spectrogram(int16_to_unit(waveform.float()))
        spec = spec[:, : N_BANDS * BAND_HEIGHT].unflatten(1, (N_BANDS, BAND_HEIGHT))
        power = spec[..., 0] ** 2 + spec[..., 1] ** 2
        power = torch.where(power > 0.0, power, torch.full_like(power, LOG10_EPS))
        return torch.log10(power).mul(10.0)

    def pooled_features(self, image: torch.Tensor) -> torch.Tensor:
        """`[N, 3, 341, F]` -> attention-gated, average-pooled `[N, 2048]`."""
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(image))), 3, stride=2, padding=1)
        for layer, gate in ((self.layer1, self.att1), (self.layer2, self.att2), (self.layer3, self.att3)):
            out = layer(x)
            x = out * gate(x, out.shape[-2:])
        out = self.layer4(x)
        x = out * self.att4(x, out.shape[-2:])
        pooled = F.adaptive_avg_pool2d(x, 1)
        return torch.flatten(pooled * self.att5(x, pooled.shape[-2:]), 1)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() not in (2, 3):
            raise ValueError(f"expected a waveform [B, T] or [B, C, T], got shape {tuple(waveform.shape)}")
        batch = waveform.shape[0]
        channels = waveform.reshape(-1, waveform.shape[-1])  # every channel runs through the same network
        features = self.pooled_features(self.log_power_bands(channels))
        return self.fc(features.reshape(batch, -1, features.shape[-1]).sum(dim=1))
