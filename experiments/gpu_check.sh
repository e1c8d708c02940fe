#!/usr/bin/env bash
# The suite's first run on a GPU: what a user with one NVIDIA GPU runs once, from the
# repository root, after `pip install -e ".[dev,gpu,jax-cuda]"` (README, "On a GPU").
#
#     experiments/gpu_check.sh [OUT_DIR]      # default: gpu-check-<date>-<time>
#
# Parts, each run whatever happened to the one before (its output in OUT_DIR/<part>.log):
#   facts        the GPU (nvidia-smi), TensorFlow's build and devices, JAX's devices
#   quick        pytest --benchmark-only --profile quick (not tf.distribute: next part)
#   distributed  bench/benchmarks/bench_distributed.py, full profile (on one GPU: one replica
#                per implementation; 2+ replicas skip with the reason)
#   ab-jax       python -m bench ab -k jax (HEAD against the working tree, JAX workers)
#   report       python -m bench report on the quick and distributed results
#   tests        the plain test run (pytest), marker gpu included
# While they run, nvidia-smi is asked every few seconds for each process's GPU memory
# (OUT_DIR/gpu-memory.csv); the summary prints each part's exit status, time, failures and
# skips that name the GPU, and the peak GPU memory of every process seen. Exit status: the
# number of parts that failed. Send OUT_DIR back (logs and JSON): it is what the GPU saw.
set -u

cd "$(dirname "$0")/.." || exit 99
OUT=${1:-gpu-check-$(date +%Y%m%d-%H%M%S)}
PY=${PYTHON:-python}
SAMPLE_S=${GPU_CHECK_SAMPLE_S:-2}
mkdir -p "$OUT" || exit 99
OUT=$(cd "$OUT" && pwd)
echo "gpu_check: writing to $OUT"

SUMMARY=()
FAILED_PARTS=0
echo "setup" > "$OUT/.part"

# --- GPU memory per process, sampled in the background ---------------------------------------
SAMPLER=""
if command -v nvidia-smi > /dev/null 2>&1; then
    echo "part,time,pid,process,used_mib" > "$OUT/gpu-memory.csv"
    (
        while true; do
            part=$(cat "$OUT/.part" 2> /dev/null || echo "?")
            now=$(date +%H:%M:%S)
            nvidia-smi --query-compute-apps=pid,process_name,used_memory \
                --format=csv,noheader,nounits 2> /dev/null |
                while IFS=, read -r pid name used; do
                    [ -n "$pid" ] && echo "$part,$now,${pid// /},${name// /},${used// /}"
                done >> "$OUT/gpu-memory.csv"
            sleep "$SAMPLE_S"
        done
    ) &
    SAMPLER=$!
else
    echo "gpu_check: WARNING: nvidia-smi not found: no GPU facts, no memory per process;" \
        "the parts below will run on whatever device TensorFlow finds"
fi

stop_sampler() {
    if [ -n "$SAMPLER" ]; then
        kill "$SAMPLER" 2> /dev/null
        wait "$SAMPLER" 2> /dev/null
        SAMPLER=""
    fi
}
trap stop_sampler EXIT
trap 'echo "gpu_check: interrupted"; stop_sampler; exit 130' INT TERM

# run_part NAME COMMAND...: runs it, output to the terminal and OUT/NAME.log; never stops the
# script. Exit 1 of `bench ab` is a SLOWER verdict, not a failure of the part.
run_part() {
    local name=$1
    shift
    echo "$name" > "$OUT/.part"
    echo
    echo "=== $name: $*"
    local start=$SECONDS
    "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    local took=$((SECONDS - start))
    local verdict="ok"
    if [ "$rc" -ne 0 ]; then
        if [ "$name" = "ab-jax" ] && [ "$rc" -eq 1 ]; then
            verdict="ok (a SLOWER verdict)"
        else
            verdict="FAILED"
            FAILED_PARTS=$((FAILED_PARTS + 1))
        fi
    fi
    SUMMARY+=("$(printf '%-12s exit %-3s %5ss  %s' "$name" "$rc" "$took" "$verdict")")
    echo "=== $name: exit $rc after ${took}s ($verdict)"
}

# --- the parts ---------------------------------------------------------------------------------
# shellcheck disable=SC2329  # called through run_part
facts() {
    if command -v nvidia-smi > /dev/null 2>&1; then
        nvidia-smi -L
        nvidia-smi --query-gpu=index,name,compute_cap,driver_version,memory.total,mig.mode.current,power.limit,clocks.max.sm,clocks.max.mem \
            --format=csv
        nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
    fi
    echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<unset>}"
    "$PY" - << 'EOF'
import os, platform
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
import tensorflow as tf
import keras
print("python", platform.python_version(), "tensorflow", tf.__version__, "keras", keras.__version__)
build = tf.sysconfig.get_build_info()
print("built for CUDA", build.get("cuda_version"), "cuDNN", build.get("cudnn_version"))
gpus = tf.config.list_physical_devices("GPU")
print("TensorFlow's GPUs:", gpus or "NONE (everything below runs on the CPU)")
for gpu in gpus:
    print(" ", gpu.name, tf.config.experimental.get_device_details(gpu))
print("TF32 enabled:", tf.config.experimental.tensor_float_32_execution_enabled())
EOF
    XLA_PYTHON_CLIENT_PREALLOCATE=false KERAS_BACKEND=jax "$PY" -c \
        "import jax; print('jax', jax.__version__, 'devices', jax.devices())" ||
        echo "jax: not importable (pip install -e '.[jax-cuda]'); the JAX parts will skip"
}

run_part facts facts
run_part quick "$PY" -m pytest --benchmark-only --profile quick \
    --ignore=bench/benchmarks/bench_distributed.py \
    --benchmark-json="$OUT/quick.json" --benchmark-save-data
run_part distributed "$PY" -m pytest --benchmark-only --profile full \
    bench/benchmarks/bench_distributed.py --benchmark-json="$OUT/distributed.json"
run_part ab-jax "$PY" -m bench ab -k jax --json "$OUT/ab-jax.json" --markdown "$OUT/ab-jax.md"
reports=()
for f in "$OUT/quick.json" "$OUT/distributed.json" "$OUT/ab-jax.json"; do
    [ -s "$f" ] && reports+=("$f")
done
if [ "${#reports[@]}" -gt 0 ]; then
    run_part report "$PY" -m bench report "${reports[@]}" --out "$OUT/report"
else
    SUMMARY+=("$(printf '%-12s %s' report 'not run: no results file to report on')")
fi
run_part tests "$PY" -m pytest -p no:cacheprovider
echo "done" > "$OUT/.part"
stop_sampler

# --- what was seen -------------------------------------------------------------------------------
echo
echo "================ gpu_check summary ($OUT) ================"
for line in "${SUMMARY[@]}"; do
    echo "  $line"
done
if [ -s "$OUT/quick.json" ]; then
    echo
    echo "machine (quick.json's machine_info.loopbench):"
    "$PY" - "$OUT/quick.json" << 'EOF' || echo "  (could not read it)"
import json, sys
lb = json.load(open(sys.argv[1]))["machine_info"].get("loopbench", {})
keys = ("device", "gpus", "tf32", "calibration_precision", "calibration_gflops",
        "calibration_small_matmul_s", "gpu_driver", "cuda_version", "cudnn_version",
        "cuda_visible_devices", "gpu_processes", "tensorflow", "keras")
for key in keys:
    print(f"  {key}: {lb.get(key, '<absent>')}")
EOF
fi
echo
echo "failures and errors (pytest's short summary, tracebacks' last lines):"
grep -hE "^(FAILED|ERROR) |Error: |error: " "$OUT"/*.log 2> /dev/null | sort | uniq -c |
    sort -rn | head -40 || true
echo
echo "skips that name the GPU, a device or a replica count:"
grep -hE "^SKIPPED .*(GPU|gpu|device|replica|compute capability|NCCL|CPU knob)" "$OUT"/*.log \
    2> /dev/null | sort | uniq -c | sort -rn | head -40 || true
if [ -s "$OUT/gpu-memory.csv" ]; then
    echo
    echo "peak GPU memory per process (MiB), by part:"
    awk -F, 'NR > 1 && $5 ~ /^[0-9]+$/ {
                 key = $1 "  pid " $3 "  " $4
                 if (!(key in peak) || $5 > peak[key]) peak[key] = $5
             }
             END { for (k in peak) printf "  %7d  %s\n", peak[k], k }' \
        "$OUT/gpu-memory.csv" | sort -k2,2 -k1,1nr
fi
echo
echo "parts failed: $FAILED_PARTS (logs: $OUT/*.log)"
exit "$FAILED_PARTS"
