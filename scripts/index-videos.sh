#!/usr/bin/env bash
# Usage: scripts/index-videos.sh FOLDER... [-- clipcli retrieve options]
#
# Brings the `clipcli retrieve` indexes of FOLDER... up to date (embeds new and
# changed videos, drops deleted ones; no query) and prints one log line:
#   2026-12-06T20:15:00+00:00 added=3 unchanged=120 removed=0 failed=1 exit=4 folders=/srv/videos
# Made for cron; two runs never update one index at once (clipcli's index
# lock makes the second wait). Options after -- go to `clipcli retrieve`
# unchanged (--index DIR, --model, --checkpoint, --frames, --device...); use
# the same ones the searches use, or the next search re-embeds. Example crontab:
#   */30 * * * * /opt/clipcli/scripts/index-videos.sh /srv/videos >> /var/log/clipcli-index.log
#
# Exit status: clipcli's (0, 4 when some videos failed to decode, 2 for bad
# input, 3 for missing weights); 2 for a usage error of this script.
# CLIPCLI names the clipcli executable (default: clipcli on PATH), PYTHON the
# Python that reads its JSON report (default: python3).
set -euo pipefail

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }

# Prints the log line from clipcli's JSON report (stdin), the exit status and the folders (argv):
# the counts of its index updates ("indexes"), summed; "?" where there is no report.
LOG_LINE='
import datetime, json, shlex, sys

try:
    updates = json.load(sys.stdin)["indexes"]
except (ValueError, KeyError, TypeError):
    updates = None

def total(key):
    return "?" if updates is None else str(sum(update[key] for update in updates))

counts = {"added": "embedded", "unchanged": "unchanged", "removed": "removed", "failed": "failed"}
fields = [f"{name}={total(key)}" for name, key in counts.items()]
stamp = datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds")
folders = " ".join(shlex.quote(folder) for folder in sys.argv[2:])
sys.stdout.reconfigure(errors="backslashreplace")
print(stamp, *fields, f"exit={sys.argv[1]}", f"folders={folders}")
'

case "${1:-}" in -h | --help) usage; exit 0 ;; esac
folders=()
while (($#)) && [[ $1 != -- ]]; do
    folders+=("$1")
    shift
done
if ((${#folders[@]} == 0)); then
    echo "index-videos.sh: give one or more folders" >&2
    usage >&2
    exit 2
fi
(($# == 0)) || shift # the --

status=0
report=$("${CLIPCLI:-clipcli}" retrieve "${folders[@]}" --update-only --quiet --json "$@" </dev/null) || status=$?
printf '%s' "$report" | "${PYTHON:-python3}" -c "$LOG_LINE" "$status" "${folders[@]}"
exit "$status"
