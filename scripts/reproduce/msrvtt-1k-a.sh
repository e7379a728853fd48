#!/usr/bin/env bash
# Usage: scripts/reproduce/msrvtt-1k-a.sh DATASET_ROOT WEIGHTS [clipcli retrieve-eval options]
#
# Text-to-video R@1/5/10, MdR and MnR on MSR-VTT 1k-A (CLIP4Clip, Luo et al. 2021,
# Table 2), printed beside the paper's rows.
#
# DATASET_ROOT: as CLIP4Clip's README lays it out: msrvtt_data/MSRVTT_JSFUSION_test.csv
# (the 1,000 test sentences, from msrvtt_data.zip in github.com/ArrowLuo/CLIP4Clip
# releases) and MSRVTT/videos/all/ (the videos, from Frozen-in-Time's MSRVTT.zip).
#
# WEIGHTS: a CLIP4Clip checkpoint trained on MSR-VTT 9k, pytorch_model.bin.4 of the
# meanP ViT-B/32 run (seqTransf and seqLSTM ones work too). The frames are
# sampled as CLIP4Clip's loader samples them (1 per second, at most 12).
# The index is kept where `clipcli retrieve` keeps it (--index DIR to choose).
#
# Options after WEIGHTS go to `clipcli retrieve-eval` unchanged, after this script's,
# so they win (--limit N for a quick look, --device, --json). Example:
#   scripts/reproduce/msrvtt-1k-a.sh ~/data/msrvtt pytorch_model.bin.4 --device cuda
# CLIPCLI names the clipcli executable (default: clipcli on PATH).
set -euo pipefail

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }

case "${1:-}" in -h | --help) usage; exit 0 ;; esac
if (($# < 2)); then
    echo "msrvtt-1k-a.sh: give DATASET_ROOT and WEIGHTS" >&2
    usage >&2
    exit 2
fi
root=$1 weights=$2
shift 2

exec "${CLIPCLI:-clipcli}" retrieve-eval "$root/msrvtt_data/MSRVTT_JSFUSION_test.csv" "$root/MSRVTT/videos/all" \
    --checkpoint "$weights" --frames 12 --sampling fps "$@"
