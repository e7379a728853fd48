#!/usr/bin/env bash
# Usage: scripts/reproduce/vqav2.sh DATASET_ROOT WEIGHTS [clipcli vqa-eval options]
#
# The standard VQA accuracy, overall and per answer type, of clipcli's zero-shot
# answer ranking on VQAv2 val, printed beside TAP-C's zero-shot figure (Song et
# al. 2022, about 39%).
#
# DATASET_ROOT: VQAv2 val (visualqa.org/download.html) as distributed:
# v2_OpenEnded_mscoco_val2014_questions.json, v2_mscoco_val2014_annotations.json
# and the COCO val2014/ images (COCO_val2014_%012d.jpg).
#
# WEIGHTS: OpenAI CLIP ViT-B/16 (ViT-B-16.pt), TAP-C's backbone.
#
# Options after WEIGHTS go to `clipcli vqa-eval` unchanged, after this script's,
# so they win (--limit N for a quick look, --device, --json). Example:
#   scripts/reproduce/vqav2.sh ~/data/vqav2 ViT-B-16.pt --limit 1000
# CLIPCLI names the clipcli executable (default: clipcli on PATH).
set -euo pipefail

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }

case "${1:-}" in -h | --help) usage; exit 0 ;; esac
if (($# < 2)); then
    echo "vqav2.sh: give DATASET_ROOT and WEIGHTS" >&2
    usage >&2
    exit 2
fi
root=$1 weights=$2
shift 2

exec "${CLIPCLI:-clipcli}" vqa-eval "$root/v2_OpenEnded_mscoco_val2014_questions.json" \
    "$root/v2_mscoco_val2014_annotations.json" "$root/val2014" --model "$weights" "$@"
