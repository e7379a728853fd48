"""PointCLIP V2's realistic-projection constants.

Both renderers read them: the torch path (`projection.py`, `v2_passes.py`)
and the compiled CPU loops (`v2_cpu.py`). They live apart so that neither
module imports the other at load time.
"""

# The official values (zeroshot_cls/trainers/mv_utils_zs.py `params`).
V2_RESOLUTION = 112
V2_DEPTH = 8
V2_OBJECT_RATIO = 0.8
V2_DEPTH_BIAS = 0.2
V2_POOL = 7  # max-pool kernel (xy), stride 1, padding 2: 112 -> 110
V2_POOL_PADDING = 2
V2_SMOOTH_SIZE = 3  # Gaussian conv kernel (xy), padding 1
V2_SMOOTH_SIGMA = 3.0
V2_IMAGE = V2_RESOLUTION + 2 * V2_POOL_PADDING - V2_POOL + 1  # 110
V2_MARGIN = 4  # empty cells kept around a view's voxels: the pooling reaches 3 cells, the smoothing 1 more
# Inputs both paths can normalise exactly: rotations stay finite, and every view's half extent is a normal float.
MAX_COORDINATE, V2_MIN_EXTENT = 1e30, 1e-30
