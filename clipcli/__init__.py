"""clipcli: command-line tools and a small library for CLIP extensions."""

import warnings

# OpenAI's `clip` imports pkg_resources, which warns on import; keep that noise
# out of every clipcli command and notebook.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

__version__ = "0.1.0"
