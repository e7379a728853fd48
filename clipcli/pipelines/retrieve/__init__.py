"""CLIP4Clip text-to-video retrieval over folders of videos, with an incremental index.

Zero-shot (the default) is CLIP4Clip's meanP over OpenAI CLIP: 12 frames per
video, each frame's CLIP embedding L2-normalised, averaged, renormalised, and
ranked by cosine with the query's text embedding. With a fine-tuned
CLIP4Clip checkpoint its CLIP tower embeds frames and text and its seqTransf
or seqLSTM head pools the frames. Facts: docs/methods/retrieve.md.

One module per job: `model` (the tower, the head, the text input), `files`
(finding videos and index folders), `indexing`, `search`, `command` (what
`clipcli retrieve` runs) and `evaluation` (`clipcli retrieve-eval`). The names
below are the package's public face.
"""

from clipcli.pipelines.retrieve.command import check_options, index_groups, open_indexes, run, update_indexes
from clipcli.pipelines.retrieve.evaluation import (
    PAPER_MSRVTT,
    evaluate,
    read_pairs,
    retrieval_metrics,
)
from clipcli.pipelines.retrieve.files import check_roots, default_index_dir, find_videos, index_home, walk_videos
from clipcli.pipelines.retrieve.indexing import (
    DEFAULT_FRAMES,
    SAMPLINGS,
    DecodedVideo,
    IndexJob,
    UpdateSummary,
    decode_video,
    embed_videos,
    summary_line,
    update_index,
)
from clipcli.pipelines.retrieve.model import MAX_WORDS, Retriever, RetrieverSource, tokenize
from clipcli.pipelines.retrieve.search import (
    Hit,
    best_segment,
    check_ann,
    rank_videos,
    rank_videos_ann,
    search,
    use_ann,
)

__all__ = [
    "DEFAULT_FRAMES",
    "MAX_WORDS",
    "PAPER_MSRVTT",
    "SAMPLINGS",
    "DecodedVideo",
    "Hit",
    "IndexJob",
    "Retriever",
    "RetrieverSource",
    "UpdateSummary",
    "best_segment",
    "check_ann",
    "check_options",
    "check_roots",
    "decode_video",
    "default_index_dir",
    "embed_videos",
    "evaluate",
    "find_videos",
    "index_groups",
    "index_home",
    "open_indexes",
    "read_pairs",
    "rank_videos",
    "rank_videos_ann",
    "retrieval_metrics",
    "run",
    "search",
    "summary_line",
    "tokenize",
    "update_index",
    "update_indexes",
    "use_ann",
    "walk_videos",
]
