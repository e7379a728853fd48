"""Temporal fusion: from per-frame CLIP features to one video embedding.

The public home of the fusion API: `mean_pool` is CLIP4Clip's meanP (and
ActionCLIP's zero-shot fusion); the checkpoint-backed heads, CLIP4Clip's
seqLSTM/seqTransf and ActionCLIP's Transf/LSTM/Conv_1D, live in their own
modules and are re-exported here.
"""

from clipcli.models.actionclip import load_actionclip
from clipcli.models.clip4clip import load_clip4clip
from clipcli.models.pooling import mean_pool

__all__ = ["load_actionclip", "load_clip4clip", "mean_pool"]
