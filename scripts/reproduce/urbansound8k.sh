#!/usr/bin/env bash
# Usage: scripts/reproduce/urbansound8k.sh DATASET_ROOT WEIGHTS [clipcli audio-eval options]
#
# Zero-shot top-1 and top-5 on UrbanSound8K, per fold and the mean over the 10
# folds (AudioCLIP, Guzhov et al. 2021: 68.78%), printed beside the paper's figure.
#
# DATASET_ROOT: UrbanSound8K as distributed, with metadata/UrbanSound8K.csv and
# audio/fold1..fold10/*.wav (urbansounddataset.weebly.com/urbansound8k.html).
#
# WEIGHTS: AudioCLIP-Full-Training.pt (github.com/AndreyGuzhov/AudioCLIP releases),
# the fully trained model of the paper's zero-shot rows.
#
# Options after WEIGHTS go to `clipcli audio-eval` unchanged, after this script's,
# so they win (--limit N for a quick look, --device, --json). Example:
#   scripts/reproduce/urbansound8k.sh ~/data/UrbanSound8K AudioCLIP-Full-Training.pt
# CLIPCLI names the clipcli executable (default: clipcli on PATH).
set -euo pipefail

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }

case "${1:-}" in -h | --help) usage; exit 0 ;; esac
if (($# < 2)); then
    echo "urbansound8k.sh: give DATASET_ROOT and WEIGHTS" >&2
    usage >&2
    exit 2
fi
root=$1 weights=$2
shift 2

exec "${CLIPCLI:-clipcli}" audio-eval "$root" --dataset us8k --checkpoint "$weights" "$@"
