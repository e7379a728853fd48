"""The command line's shared vocabulary: each recurring option declared once, with one wording and one check.

Typer reads these annotations to build the parser, so this module stays light
(no torch): `clipcli --help` and a rejected option must answer at once. Mode
options are string enums, so the parser itself refuses a bad value and lists the
choices; their members are plain strings to the pipelines.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

OUTPUT_NAMING = (
    "files are named after each input without its extension; inputs that would write the same file name are refused"
)


class Choice(str, Enum):
    """A mode option's values: strings that print as themselves (enum.StrEnum needs Python 3.11)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


MODEL_HELP = "CLIP model: a release name (RN50, ViT-B/32, ...), a name given to `models import`, or a checkpoint file"


class Projection(Choice):
    V2 = "v2"
    V1 = "v1"


class Subsample(Choice):
    """How a point cloud is cut down to --points."""

    FPS = "fps"
    RANDOM = "random"
    FIRST = "first"


class UpAxis(Choice):
    Y = "y"
    Z = "z"


class FrameSampling(Choice):
    """Which frames of a video are embedded (fps: frames per second, CLIP4Clip's loader)."""

    UNIFORM = "uniform"
    FPS = "fps"


class AnnMode(Choice):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


class Colormap(Choice):
    MAGMA = "magma"
    INFERNO = "inferno"
    PLASMA = "plasma"
    VIRIDIS = "viridis"
    TURBO = "turbo"
    JET = "jet"
    BONE = "bone"


class FeatureLayout(Choice):
    VQA = "vqa"
    CAPTION = "caption"
    POOLED = "pooled"


class Dtype(Choice):
    FLOAT16 = "float16"
    FLOAT32 = "float32"


class Animation(Choice):
    GIF = "gif"
    MP4 = "mp4"


class DecodeMode(Choice):
    """Where inputs are decoded (clipcli.media.decoders)."""

    AUTO = "auto"
    CPU = "cpu"
    GPU = "gpu"


def model_option(detail: str = "") -> Any:
    """`--model`, worded alike everywhere; `detail` says what this command needs of the model."""
    return typer.Option("--model", help=f"{MODEL_HELP}{detail}.")


def labels_option(sets: str, detail: str = "a file (one label per line)") -> Any:
    """`--labels`: the packaged label sets named in `sets`, a file, or a comma list."""
    return typer.Option("--labels", help=f"{sets}, {detail}, or a comma list 'a,b,c'.")


def out_option(what: str = "Output folder") -> Any:
    return typer.Option("--out", help=f"{what}: {OUTPUT_NAMING}.")


def frames_option(detail: str) -> Any:
    return typer.Option("--frames", min=1, help=f"Frames sampled per video {detail}.")


def batch_size_option(unit: str) -> Any:
    return typer.Option("--batch-size", min=1, help=f"{unit} per forward pass.")


TopK = Annotated[
    int, typer.Option("--top-k", "-k", min=1, help="How many best-scoring results to report for each input.")
]
Workers = Annotated[
    int | None,
    typer.Option("--workers", min=1, help="Threads reading inputs ahead (default: the CPU count, at most 8)."),
]
ClusterWorkers = Annotated[
    int | None,
    typer.Option("--workers", min=1, help="With --cluster on machines without a GPU: CPU actors (default 1)."),
]
Cluster = Annotated[
    str | None,
    typer.Option(
        "--cluster",
        metavar="local|auto|ADDRESS",
        help="Run on Ray: local (this machine, one actor per GPU), auto (RAY_ADDRESS or a running `ray start`) "
        "or a head node's host:port / ray:// address. Inputs must be at the same path on every node; outputs "
        "are written here. Needs pip install 'clipcli[ray]'.",
    ),
]
Html = Annotated[
    Path | None,
    typer.Option("--html", metavar="FILE", help="Also write a self-contained HTML page of the results to FILE."),
]
Decode = Annotated[
    DecodeMode,
    typer.Option(
        "--decode",
        help="auto (the GPU's JPEG/video decoders when present and the device is CUDA), cpu, "
        "or gpu (an error where none can run).",
    ),
]
OutputFolder = Annotated[Path, out_option()]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Redo inputs whose outputs exist.")]
TrustCheckpoint = Annotated[
    bool,
    typer.Option(
        "--trust-checkpoint",
        help="Load checkpoints that run code when loaded: pickles holding objects, TorchScript files that are "
        "no known release. models import --trust-checkpoint stores such a file's tensors only.",
    ),
]
