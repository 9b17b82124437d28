#!/bin/sh
# Runs the busted specs under tests/ and ends with one line
# "N passed, N failed, N skipped"; exits non-zero when anything failed.
#
#   sh tests/run.sh                 every spec (conformance too when PyTorch is installed)
#   sh tests/run.sh --conformance   only the full-size PyTorch comparison
#   sh tests/run.sh --gpu           every spec on the CUDA backend (MRT_DEVICE=cuda)
#   sh tests/run.sh FILE...         the given spec files
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export MRT_HOME="$root"
export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;;"
log=$(mktemp)
trap 'rm -f "$log"' EXIT

conformance=auto
specs=""
for a in "$@"; do
   case "$a" in
   --conformance) conformance=only ;;
   --gpu) export MRT_DEVICE=cuda MRT_TEST_GPU=1 ;;
   *) specs="$specs $a" ;;
   esac
done

if [ "$conformance" = auto ] && /usr/bin/python3 -c 'import torch, torchvision' 2>/dev/null; then
   conformance=yes
fi
if [ "$conformance" = only ] || [ "$conformance" = yes ]; then
   fixtures="$root/build/fixtures-full"
   if [ ! -f "$fixtures/.done" ]; then
      echo "generating full-size PyTorch fixtures in $fixtures"
      mkdir -p "$fixtures"
      /usr/bin/python3 tests/fixtures/make_fixtures.py --full "$fixtures" >"$log" 2>&1 \
         && touch "$fixtures/.done" || { cat "$log"; echo "0 passed, 1 failed"; exit 1; }
   fi
   export MRT_FULL_FIXTURES="$fixtures"
fi
if [ -z "$specs" ]; then
   if [ "$conformance" = only ]; then
      specs="tests/conformance_spec.lua"
   else
      specs=$(ls tests/*_spec.lua)
   fi
fi

status=0
# shellcheck disable=SC2086
busted -o TAP $specs >"$log" 2>&1 || status=$?
cat "$log"
passed=$(grep -c '^ok [0-9]* - [^#]' "$log")
skipped=$(grep -c '^ok [0-9]* - # SKIP' "$log")
failed=$(grep -c '^not ok ' "$log")
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
   # busted itself failed (a spec that does not load): count it as a failure.
   failed=1
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
