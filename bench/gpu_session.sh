#!/usr/bin/env bash
# One device-tool call that runs several bench scripts in turn, each with its own $OUT folder and a
# time budget, and brings everything back as one archive (the tool returns at most 8 files a call,
# each under 16 MiB: a bigger archive comes back in 15 MiB parts, session.tar.gz.part-aa, -ab, ...).
#   run: bash bench/gpu_session.sh bench/gpu_faults.sh:120 bench/gpu_batch.sh:240   (carry .whl, ...)
#   here: cat <files_at>/session.tar.gz* | tar xz -C <folder>
set -uo pipefail
source bench/gpu_env.sh
final=${OUT:-/tmp/out}
root=/tmp/gpu-session
rm -rf "$root"; mkdir -p "$root"
for item in "$@"; do
  script=${item%%:*}; budget=${item##*:}; [ "$budget" = "$item" ] && budget=540
  name=$(basename "$script" .sh); mkdir -p "$root/$name"
  start=$(date +%s)
  OUT="$root/$name" timeout --signal=INT --kill-after=15 "$budget" bash "$script" > "$root/$name/log.txt" 2>&1
  echo "== $name: exit $? after $(( $(date +%s) - start )) s (budget $budget s)"
  tail -n 25 "$root/$name/log.txt"
done
tar czf "$final/session.tar.gz" -C "$root" .
if [ "$(stat -c %s "$final/session.tar.gz")" -gt $((15 * 1024 * 1024)) ]; then
  split -b 15M "$final/session.tar.gz" "$final/session.tar.gz.part-" && rm "$final/session.tar.gz"
fi
ls -l "$final"
