#!/usr/bin/env bash
# Usage: scripts/reproduce/scanobjectnn.sh DATASET_ROOT WEIGHTS [clipcli point-eval options]
#
# Zero-shot top-1, top-5 and class-mean accuracy on ScanObjectNN's hardest split,
# PB_T50_RS (PointCLIP V2, Zhu et al. 2023: 35.66% with ViT-B/16), printed beside
# the paper's figure.
#
# DATASET_ROOT: ScanObjectNN's h5_files/ folder, with
# main_split/test_objectdataset_augmentedrot_scale75.h5 (h5_files.zip, on request
# from hkust-vgd.github.io/scanobjectnn).
#
# WEIGHTS: OpenAI CLIP ViT-B/16 (ViT-B-16.pt), the backbone of PointCLIP V2's table,
# used with V2's searched prompts and view weights for ViT-B/16.
#
# Options after WEIGHTS go to `clipcli point-eval` unchanged, after this script's,
# so they win (--limit N for a quick look, --device, --json). Example:
#   scripts/reproduce/scanobjectnn.sh ~/data/h5_files ViT-B-16.pt
# CLIPCLI names the clipcli executable (default: clipcli on PATH).
set -euo pipefail

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }

case "${1:-}" in -h | --help) usage; exit 0 ;; esac
if (($# < 2)); then
    echo "scanobjectnn.sh: give DATASET_ROOT and WEIGHTS" >&2
    usage >&2
    exit 2
fi
root=$1 weights=$2
shift 2

exec "${CLIPCLI:-clipcli}" point-eval "$root/main_split/test_objectdataset_augmentedrot_scale75.h5" --labels scanobjectnn \
    --projection v2 --model "$weights" --prompts paper:vit_b16 --view-weights paper:vit_b16 "$@"
