#!/usr/bin/env bash
# Runs fuzz targets for a budget of CPU time each (not wall time: on a shared machine a
# wall-clock budget says little about how much fuzzing was done), JOBS at a time, at
# nice 19 so that builds and tests keep the processor.
#
#   fuzz/campaign.sh OUT JOBS target:cpu-minutes [target:cpu-minutes ...]
#
# Each target fuzzes a private copy of fuzz/corpus/TARGET under OUT/TARGET.corpus, so an
# interrupted campaign never leaves half a corpus in the tree. When a target has used its
# budget it gets SIGINT, which makes libFuzzer print its final statistics; OUT/TARGET.log
# holds them and OUT/summary.tsv gets one line per target: name, executions, CPU seconds,
# coverage, features, crashes. Minimise into the tree afterwards with
#   fuzz/target/*/release/TARGET -merge=1 NEW OUT/TARGET.corpus && replace fuzz/corpus/TARGET
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: campaign.sh OUT JOBS target:minutes...}
jobs=${2:?usage: campaign.sh OUT JOBS target:minutes...}
shift 2
mkdir -p "$out"
out=$(cd "$out" && pwd)
bin_dir=$(ls -d "$here"/target/*/release | head -n1)
export ASAN_OPTIONS=detect_odr_violation=0

cpu_seconds() { # utime + stime of one process, in seconds
    local ticks
    ticks=$(awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    echo $((ticks / $(getconf CLK_TCK)))
}

run_one() {
    local name=${1%%:*} minutes=${1##*:}
    local corpus=$out/$name.corpus log=$out/$name.log
    local budget=$((minutes * 60))
    mkdir -p "$corpus" "$out/$name.artifacts"
    cp -n "$here/corpus/$name"/* "$corpus"/ 2>/dev/null || true
    nice -n 19 "$bin_dir/$name" -print_final_stats=1 \
        -artifact_prefix="$out/$name.artifacts/" "$corpus" >"$log" 2>&1 &
    local pid=$! used=0
    while kill -0 "$pid" 2>/dev/null; do
        used=$(cpu_seconds "$pid")
        if ((used >= budget)); then
            kill -INT "$pid"
            break
        fi
        sleep 10
    done
    wait "$pid" || true
    local runs cov ft crashes
    runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{ print $2 }')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 | awk '{ print $2 }')
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n1 | awk '{ print $2 }')
    crashes=$(find "$out/$name.artifacts" -type f | wc -l)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "${runs:-?}" "$used" "${cov:-?}" "${ft:-?}" \
        "$crashes" >>"$out/summary.tsv"
}

# A simple job pool: start targets until JOBS run, then wait for any to finish.
for spec in "$@"; do
    while (($(jobs -rp | wc -l) >= jobs)); do
        wait -n || true
    done
    run_one "$spec" &
done
wait
