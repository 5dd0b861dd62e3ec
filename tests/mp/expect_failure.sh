#!/usr/bin/env bash
# Runs a command that must FAIL quickly with a given message: exit status non-zero, output matching a
# regular expression, and done within a time limit (a hang, a success or a silent failure all fail).
# Usage: expect_failure.sh <max_seconds> <extended-regex> <command> [args...]
set -u
max_s=$1 pattern=$2
shift 2
start=$(date +%s.%N)
output=$(timeout --kill-after=5 "$((max_s + 5))" "$@" 2>&1)
status=$?
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
printf '%s\n' "$output"
echo "expect_failure: exit status $status after ${elapsed}s (limit ${max_s}s)"
if [ "$status" -eq 0 ]; then echo "expect_failure: FAIL: the command succeeded"; exit 1; fi
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then echo "expect_failure: FAIL: the command hung"; exit 1; fi
if ! printf '%s\n' "$output" | grep -Eq -- "$pattern"; then
  echo "expect_failure: FAIL: no line matches: $pattern"; exit 1
fi
if [ "$(echo "$elapsed > $max_s" | bc)" -eq 1 ]; then echo "expect_failure: FAIL: slower than ${max_s}s"; exit 1; fi
echo "expect_failure: OK"
