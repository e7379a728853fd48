"""clipcli: command-line tools and a small library for CLIP extensions."""

import os
import warnings

# torch's CPU thread pool (libgomp) keeps its threads spinning after each parallel op, 300,000 iterations by
# default: about 6 ms on a recent Intel core, where a spin-wait pause is slow. Those threads then hold the cores that
# work right after a torch op needs (PointCLIP V2's compiled per-view loops follow its rotation, a torch matmul). A
# short spin keeps back-to-back torch ops as fast. It counts only when set before torch loads; a set value wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

# OpenAI's `clip` imports pkg_resources, which warns on import; keep that noise
# out of every clipcli command and notebook.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

__version__ = "0.1.0"
