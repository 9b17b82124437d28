#!/bin/sh
# The one script to run on a machine with an NVIDIA GPU. It builds mrt with
# the CUDA backend, then runs the host check of the kernels' arithmetic,
# tests/cuda_spec.lua (every op against the CPU backend), the GPU benchmark
# and the whole suite on the GPU (make test-gpu). All output goes to one log
# that ends with a line per stage.
#
#   sh tests/gpu/run.sh [LOG_DIR]     log in LOG_DIR/gpu-run.log (default build/gpu)
#
# Environment: MRT_BENCH_CPU=1 adds the CPU column to the benchmark (minutes
# more at full size); MRT_GPU_SUITE=0 skips make test-gpu. Each stage has a
# time limit (seconds) so that a hang cannot eat a borrowed machine's time.
# Exits non-zero when a stage failed or timed out.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root" || exit 2
logdir=${1:-$root/build/gpu}
mkdir -p "$logdir" || exit 2
log=$logdir/gpu-run.log
: >"$log"
export MRT_HOME="$root"
export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;;"
jobs=$(nproc 2>/dev/null || echo 2)
failed=0
summary=""

# stage NAME LIMIT COMMAND...: runs COMMAND with output appended to the log.
stage() {
   name=$1
   limit=$2
   shift 2
   printf '\n==== %s: %s\n' "$name" "$*" >>"$log"
   start=$(date +%s)
   timeout "$limit" "$@" >>"$log" 2>&1
   rc=$?
   took=$(($(date +%s) - start))
   if [ "$rc" -eq 124 ]; then
      result="timed out after ${limit}s"
   elif [ "$rc" -eq 0 ]; then
      result="ok"
   else
      result="failed (exit $rc)"
   fi
   [ "$rc" -eq 0 ] || failed=1
   summary="$summary$name: $result in ${took}s
"
   echo "$name: $result in ${took}s"
}

stage 'machine' 60 sh -c 'nvidia-smi; nvidia-smi -L; /usr/local/cuda/bin/nvcc --version;
   grep -E "define CUDNN_(MAJOR|MINOR|PATCHLEVEL)" /usr/local/cuda/include/cudnn_version.h;
   git rev-parse HEAD; git status --short | wc -l'
stage 'build' 900 make -j"$jobs" all
stage 'host check' 300 make cuda-host-check
stage 'cuda spec' 600 busted -o TAP tests/cuda_spec.lua
if [ "${MRT_BENCH_CPU:-0}" = 1 ]; then
   stage 'benchmark' 900 luajit tests/bench/gpu_bench.lua
else
   stage 'benchmark' 600 luajit tests/bench/gpu_bench.lua --no-cpu
fi
if [ "${MRT_GPU_SUITE:-1}" != 0 ]; then
   stage 'suite on cuda' 900 make test-gpu
fi

printf '\n==== summary\n%s' "$summary" >>"$log"
echo "log: $log"
exit "$failed"
