#!/usr/bin/env bash
# Usage: scripts/reproduce/kinetics400.sh DATASET_ROOT WEIGHTS [clipcli action-eval options]
#
# Top-1, top-5 and mean class accuracy on the Kinetics-400 validation set under
# ActionCLIP's single-view test (Wang et al. 2021), printed beside the published
# figures: 82.32% / 96.20% for ViT-B/16 with 32 frames.
#
# DATASET_ROOT: the Kinetics-400 validation videos as frame folders extracted the
# TSN way (CLASS/YOUTUBE_ID/img_00001.jpg...), with ActionCLIP's
# lists/k4001/val_frames_re.txt (github.com/sallymmx/ActionCLIP) copied into
# DATASET_ROOT: 'FOLDER FRAMES LABEL' lines, relative to DATASET_ROOT.
#
# WEIGHTS: ActionCLIP's vit-b-16-32f.pt (ViT-B/16, 32 frames, trained on K400; see
# its README). 32 frames are sampled (add --frames 8 or 16 for the 8- and
# 16-frame checkpoints).
#
# Options after WEIGHTS go to `clipcli action-eval` unchanged, after this script's,
# so they win (--limit N for a quick look, --device, --json). Example:
#   scripts/reproduce/kinetics400.sh ~/data/k400_val_frames vit-b-16-32f.pt --device cuda
# CLIPCLI names the clipcli executable (default: clipcli on PATH).
set -euo pipefail

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }

case "${1:-}" in -h | --help) usage; exit 0 ;; esac
if (($# < 2)); then
    echo "kinetics400.sh: give DATASET_ROOT and WEIGHTS" >&2
    usage >&2
    exit 2
fi
root=$1 weights=$2
shift 2

exec "${CLIPCLI:-clipcli}" action-eval "$root/val_frames_re.txt" --root "$root" --labels kinetics400 \
    --checkpoint "$weights" --frames 32 "$@"
