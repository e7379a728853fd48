#!/usr/bin/env bash
# Usage: scripts/reproduce/modelnet40.sh DATASET_ROOT WEIGHTS [clipcli point-eval options]
#
# Zero-shot top-1, top-5 and class-mean accuracy on the ModelNet40 test set
# (PointCLIP V2, Zhu et al. 2023: 64.26% with ViT-B/16), printed beside the
# paper's figure.
#
# DATASET_ROOT: PointNet's modelnet40_ply_hdf5_2048/ folder, with ply_data_test0.h5
# and ply_data_test1.h5 (shapenet.cs.stanford.edu/media/modelnet40_ply_hdf5_2048.zip).
#
# WEIGHTS: OpenAI CLIP ViT-B/16 (ViT-B-16.pt), the backbone of PointCLIP V2's table,
# used with V2's searched prompts and view weights for ViT-B/16.
#
# Options after WEIGHTS go to `clipcli point-eval` unchanged, after this script's,
# so they win (--limit N for a quick look, --device, --json). Example:
#   scripts/reproduce/modelnet40.sh ~/data/modelnet40_ply_hdf5_2048 ViT-B-16.pt
# CLIPCLI names the clipcli executable (default: clipcli on PATH).
set -euo pipefail

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }

case "${1:-}" in -h | --help) usage; exit 0 ;; esac
if (($# < 2)); then
    echo "modelnet40.sh: give DATASET_ROOT and WEIGHTS" >&2
    usage >&2
    exit 2
fi
root=$1 weights=$2
shift 2

exec "${CLIPCLI:-clipcli}" point-eval "$root/ply_data_test0.h5" "$root/ply_data_test1.h5" --labels modelnet40 \
    --projection v2 --model "$weights" --prompts paper:vit_b16 --view-weights paper:vit_b16 "$@"
