#!/usr/bin/env bash
# Usage: scripts/reproduce/nyu-depth-v2.sh DATASET_ROOT WEIGHTS [clipcli depth-eval options]
#
# Zero-shot monocular depth on the 654 NYU Depth v2 test images (DepthCLIP, Zhang
# et al. 2022: delta1 0.394, AbsRel 0.388, RMSE 1.167), printed beside the paper's
# row.
#
# DATASET_ROOT: the official test split as DepthCLIP's
# datasets/extract_official_train_test_set_from_mat.py writes it from
# nyu_depth_v2_labeled.mat (cs.nyu.edu/~silberman/datasets/nyu_depth_v2.html):
# SCENE/rgb_NNNNN.jpg and SCENE/sync_depth_NNNNN.png (millimetres), with
# DepthCLIP's datasets/nyudepthv2_test_files_with_gt_dense.txt copied into it.
#
# WEIGHTS: OpenAI CLIP RN50 (RN50.pt), DepthCLIP's backbone.
#
# Options after WEIGHTS go to `clipcli depth-eval` unchanged, after this script's,
# so they win (--limit N for a quick look, --device, --json). Example:
#   scripts/reproduce/nyu-depth-v2.sh ~/data/nyu/official_splits/test RN50.pt
# CLIPCLI names the clipcli executable (default: clipcli on PATH).
set -euo pipefail

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }

case "${1:-}" in -h | --help) usage; exit 0 ;; esac
if (($# < 2)); then
    echo "nyu-depth-v2.sh: give DATASET_ROOT and WEIGHTS" >&2
    usage >&2
    exit 2
fi
root=$1 weights=$2
shift 2

exec "${CLIPCLI:-clipcli}" depth-eval --list "$root/nyudepthv2_test_files_with_gt_dense.txt" --model "$weights" "$@"
