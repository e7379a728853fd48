#!/usr/bin/env bash
# Usage: scripts/reproduce/esc50.sh DATASET_ROOT WEIGHTS [clipcli audio-eval options]
#
# Zero-shot top-1 and top-5 on ESC-50, per fold and the mean over the 5 folds
# (AudioCLIP, Guzhov et al. 2021: 69.40%), printed beside the paper's figure.
#
# DATASET_ROOT: ESC-50 as distributed, ESC-50-master/ with meta/esc50.csv and
# audio/*.wav (github.com/karolpiczak/ESC-50, the master zip).
#
# WEIGHTS: AudioCLIP-Full-Training.pt (github.com/AndreyGuzhov/AudioCLIP releases),
# the fully trained model of the paper's zero-shot rows.
#
# Options after WEIGHTS go to `clipcli audio-eval` unchanged, after this script's,
# so they win (--limit N for a quick look, --device, --json). Example:
#   scripts/reproduce/esc50.sh ~/data/ESC-50-master AudioCLIP-Full-Training.pt
# CLIPCLI names the clipcli executable (default: clipcli on PATH).
set -euo pipefail

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }

case "${1:-}" in -h | --help) usage; exit 0 ;; esac
if (($# < 2)); then
    echo "esc50.sh: give DATASET_ROOT and WEIGHTS" >&2
    usage >&2
    exit 2
fi
root=$1 weights=$2
shift 2

exec "${CLIPCLI:-clipcli}" audio-eval "$root" --dataset esc50 --checkpoint "$weights" "$@"
