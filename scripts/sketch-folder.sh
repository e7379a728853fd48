#!/usr/bin/env bash
# Usage: scripts/sketch-folder.sh SRC OUT [clipcli sketch options]
#
# Sketches every image under SRC (recursively) with `clipcli sketch`, one call
# per folder, mirroring SRC's subfolders under OUT: SRC/a/b/cat.jpg gives
# OUT/a/b/cat_sketch.svg, .png and .json. Resumable: images whose outputs
# exist are skipped (pass --overwrite to redo them). Where `clipcli sketch`
# has --html, each folder also gets OUT/<folder>/index.html.
#
# Options after OUT go to every `clipcli sketch` call unchanged, e.g.
#   scripts/sketch-folder.sh photos/ sketches/ --iterations 500 --device cuda:1
#
# Exit status: 0 when every image was sketched or skipped; 4 when some failed
# and others were done (each failure is said on stderr); when no folder got
# anything done, clipcli's status for the first one (2: bad input or options,
# 3: missing weights); 2 for a usage error of this script.
# CLIPCLI names the clipcli executable (default: clipcli on PATH).
set -euo pipefail

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }

# The image extensions clipcli reads (clipcli/media/images.py IMAGE_EXTENSIONS).
IMAGE_NAMES=(-iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.jpe' -o -iname '*.png' -o -iname '*.bmp'
    -o -iname '*.gif' -o -iname '*.tif' -o -iname '*.tiff' -o -iname '*.webp' -o -iname '*.ppm'
    -o -iname '*.pgm' -o -iname '*.pbm' -o -iname '*.pnm')

case "${1:-}" in -h | --help) usage; exit 0 ;; esac
if (($# < 2)); then
    echo "sketch-folder.sh: give SRC and OUT" >&2
    usage >&2
    exit 2
fi
src=$1 out=$2
shift 2
[[ $src == / ]] || src=${src%/}
if [[ ! -d $src ]]; then
    echo "sketch-folder.sh: $src: not a folder" >&2
    exit 2
fi
clipcli=${CLIPCLI:-clipcli}
mkdir -p -- "$out"
if [[ $src -ef $out ]]; then
    echo "sketch-folder.sh: OUT must not be SRC itself (a folder inside it is fine)" >&2
    exit 2
fi

sketch_help=$("$clipcli" sketch --help 2>/dev/null) || true
html=false
if [[ $sketch_help == *--html* ]]; then html=true; fi

# Sketch the images directly in folder $1 into its mirror under OUT; sets $status (skip: no images there).
sketch_folder() {
    local folder=$1 rel target image images=() html_page=()
    shift
    while IFS= read -r -d '' image; do
        images+=("$image")
    done < <(find "$folder" -mindepth 1 -maxdepth 1 -type f \( "${IMAGE_NAMES[@]}" \) -print0 | sort -z)
    if ((${#images[@]} == 0)); then
        status=skip
        return
    fi
    rel=${folder#"$src"}
    target=$out${rel:+/${rel#/}}
    if $html; then html_page=(--html "$target/index.html"); fi
    status=0
    "$clipcli" sketch "${images[@]}" --out "$target" ${html_page[@]+"${html_page[@]}"} "$@" </dev/null || status=$?
}

done_some=false partial=false first_error=0
while IFS= read -r -d '' folder; do
    sketch_folder "$folder" "$@"
    case $status in
        skip) ;;
        0) done_some=true ;;
        4) done_some=true partial=true ;;
        *) ((first_error)) || first_error=$status ;;
    esac
done < <(find "$src" \( -type d -samefile "$out" -prune \) -o -type d -print0 | sort -z)

if ! $partial && ((first_error == 0)); then exit 0; fi
if $done_some; then exit 4; fi
exit "$first_error"
