"""Defaults that both the pipelines and the command line's help state, in a module with no heavy imports.

`clipcli --help` must not import torch (it would take seconds), so option
defaults and help texts read these values from here, not from the pipelines.
"""

AUDIOCLIP_CHECKPOINT = "audioclip-full"
FPS_POOL_MULTIPLE = 32  # farthest-point sampling searches at most this many x `points` points
