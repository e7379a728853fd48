#!/usr/bin/env bash
# Usage: scripts/reproduce/ucf101.sh DATASET_ROOT WEIGHTS [clipcli action-eval options]
#
# Top-1, top-5 and mean class accuracy on UCF101 split 1 under ActionCLIP's
# single-view test (Wang et al. 2021), printed beside the published figures for
# the checkpoint's architecture: 97.1% fine-tuned, 58.3% zero-shot (ViT-B/16).
#
# DATASET_ROOT: UCF101 (crcv.ucf.edu/data/UCF101.php) as frame folders extracted
# the TSN way (VIDEO/img_00001.jpg...), and the test list of split 1 in
# ActionCLIP's format, DATASET_ROOT/val_rgb_split1.txt: 'FOLDER FRAMES LABEL'
# lines, relative to DATASET_ROOT (mmaction2's build_file_list.py writes it;
# 'VIDEO LABEL' lines of video files work too).
#
# WEIGHTS: an ActionCLIP checkpoint: the UCF101 fine-tuned ViT-B/16 32-frame model,
# or the Kinetics-400 vit-b-16-32f.pt for the zero-shot figure. 32 frames are
# sampled (add --frames N for another checkpoint).
#
# Options after WEIGHTS go to `clipcli action-eval` unchanged, after this script's,
# so they win (--limit N for a quick look, --device, --json). Example:
#   scripts/reproduce/ucf101.sh ~/data/ucf101_frames vit-b-16-32f.pt --device cuda
# CLIPCLI names the clipcli executable (default: clipcli on PATH).
set -euo pipefail

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }

case "${1:-}" in -h | --help) usage; exit 0 ;; esac
if (($# < 2)); then
    echo "ucf101.sh: give DATASET_ROOT and WEIGHTS" >&2
    usage >&2
    exit 2
fi
root=$1 weights=$2
shift 2

exec "${CLIPCLI:-clipcli}" action-eval "$root/val_rgb_split1.txt" --root "$root" --labels ucf101 \
    --checkpoint "$weights" --frames 32 "$@"
