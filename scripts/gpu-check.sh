#!/usr/bin/env bash
# The GPU check: one command on a fresh GPU machine, no network, nothing installed.
#
#   scripts/gpu-check.sh OUT_DIR            # on a CUDA GPU; must finish within ~7 min on one H100
#   scripts/gpu-check.sh OUT_DIR --dry-run  # the same stages on the CPU with tiny sizes (CI, ~2 min on 2 cores)
#
# Runs from this checkout (PYTHONPATH = repository root; the project need not be installed) with whatever
# python3 holds torch, jax (+ its CUDA plugin), flax, optax, pytest, hypothesis, safetensors, scikit-learn,
# scipy, matplotlib and tqdm; opacus and jax-privacy may be missing (their methods are recorded as skipped,
# with the reason). Stages, each with its elapsed time: 1 env report, 2 the CUDA-marked tests (pytest -m gpu),
# 3 the agreement check on the device (float32 and float64) for every workload (compare.spec.MODELS), 4 a sweep
# of the seed CNN sized to ~60% of the time left (every method, B = 16, 64, 256, 1024, 4096; --budget stops
# starting points in time), 5 the other workloads (the fast-dpsgd suite's steps and fast per-sample methods at
# GPU_CHECK_WORKLOAD_SIZES, default 64,1024; the sequence workloads lstm and transformer included) in the rest,
# 6 figures of both. Everything is written under
# OUT_DIR: check.log (all output), stages.tsv, env.txt/env.json, pytest-gpu.xml, sweep/ (agreement.json,
# points.jsonl, results.json, figures/), workloads/ (the same for the other workloads). Exit 0 when every stage passed; a failing stage does not stop the
# later ones (except the env stage: without a GPU nothing else can run).
#
# Knobs (environment): PYTHON (default python3), GPU_CHECK_SECONDS (total target, default 420),
# GPU_CHECK_BATCH_SIZES (default 16,64,256,1024,4096), GPU_CHECK_TIMEOUT (per point, default 90 s).
set -uo pipefail

usage() { echo "usage: $0 OUT_DIR [--dry-run]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
OUT=$1
DRY=0
if [[ $# -eq 2 ]]; then [[ $2 == --dry-run ]] || usage; DRY=1; fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# Both frameworks share the GPU in the test and agreement processes: no 75% preallocation by JAX
# (compare.env.share_gpu_memory sets the same in-process; set here so every process sees it).
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}
cd "$ROOT" || exit 2
exec > >(tee -a "$OUT/check.log") 2>&1

if ((DRY)); then
    DEVICE=cpu; SIZES=2,4; METHODS=(--methods per_layer,dp_sgd); AGREE_B=4
    TIMEOUT=60; TOTAL=${GPU_CHECK_SECONDS:-240}; EXTRA=(--group-points method)  # exercise the GPU grouping
    WL_MODELS=logreg,mnist_cnn,transformer; WL_SIZES=2; WL_METHODS=(--methods per_layer,dp_bk)
else
    DEVICE=cuda; SIZES=${GPU_CHECK_BATCH_SIZES:-16,64,256,1024,4096}; METHODS=(); AGREE_B=64
    TIMEOUT=${GPU_CHECK_TIMEOUT:-90}; TOTAL=${GPU_CHECK_SECONDS:-420}; EXTRA=()
    WL_MODELS=logreg,ffnn,mnist_cnn,cifar10_cnn,embed,lstm,transformer; WL_SIZES=${GPU_CHECK_WORKLOAD_SIZES:-64,1024}; WL_METHODS=()
fi
SECONDS=0
FAILED=()
printf 'stage\tstatus\tseconds\n' > "$OUT/stages.tsv"

stage() {  # stage NAME COMMAND...: run, time, record; never exits the script
    local name=$1; shift
    local t0=$SECONDS
    echo "=== [$((SECONDS))s] stage $name: $*"
    "$@"
    local rc=$?
    local dt=$((SECONDS - t0))
    printf '%s\t%s\t%s\n' "$name" "$rc" "$dt" >> "$OUT/stages.tsv"
    echo "=== stage $name: exit $rc after ${dt}s (total ${SECONDS}s)"
    ((rc == 0)) || FAILED+=("$name")
    return $rc
}

echo "gpu-check: device=$DEVICE out=$OUT root=$ROOT python=$(command -v "$PY") dry_run=$DRY"

# 1. env: both frameworks must see the device (exit 2 with one line otherwise); JSON for the record.
stage env "$PY" -m compare.env --device "$DEVICE" || { echo "gpu-check: no usable device; stopping"; exit 1; }
"$PY" -m compare.env --json > "$OUT/env.json" 2>/dev/null

# 2. the CUDA-marked tests (on the CPU they skip, with their reason: -rs lists it).
# A test module that cannot be imported here (an optional library missing) is reported, the rest still run.
stage tests "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider --continue-on-collection-errors \
    --junitxml "$OUT/pytest-gpu.xml" tests

# 3. agreement on the device, float32 and float64 against the float64 loop reference, with decision replay.
stage agreement "$PY" -m compare.run --device "$DEVICE" --agreement-only --agreement-batch-size "$AGREE_B" \
    --out "$OUT/sweep"
stage agreement-workloads "$PY" -m compare.run --device "$DEVICE" --agreement-only --model "$WL_MODELS" \
    --agreement-batch-size "$AGREE_B" --out "$OUT/workloads"

# 4. the sweep, in ~60% of the time left: points not started within --budget are recorded as skipped.
LEFT=$((TOTAL - SECONDS - 2 * TIMEOUT - 30))
BUDGET=$((LEFT * 6 / 10))
((BUDGET >= 30)) || BUDGET=30
AGREE_FILE=()
[[ -f $OUT/sweep/agreement.json ]] && AGREE_FILE=(--agreement-file "$OUT/sweep/agreement.json")
stage sweep "$PY" -m compare.run --device "$DEVICE" --batch-sizes "$SIZES" "${METHODS[@]}" --repeats 3 \
    --min-seconds 0.2 --timeout "$TIMEOUT" --budget "$BUDGET" --no-figures "${AGREE_FILE[@]}" "${EXTRA[@]}" \
    --out "$OUT/sweep"

# 5. the other workloads in the rest (the suite's methods: sgd, every private step, the peers, per_layer, vmap).
BUDGET=$((TOTAL - SECONDS - TIMEOUT - 20))
((BUDGET >= 30)) || BUDGET=30
WL_AGREE=()
[[ -f $OUT/workloads/agreement.json ]] && WL_AGREE=(--agreement-file "$OUT/workloads/agreement.json")
stage workloads "$PY" -m compare.run --device "$DEVICE" --suite fast-dpsgd --model "$WL_MODELS" \
    --batch-sizes "$WL_SIZES" "${WL_METHODS[@]}" --repeats 3 --min-seconds 0.2 --timeout "$TIMEOUT" \
    --budget "$BUDGET" --no-figures "${WL_AGREE[@]}" "${EXTRA[@]}" --out "$OUT/workloads"

# 6. figures from the results files alone.
stage figures "$PY" -m compare.figures "$OUT/sweep"
stage figures-workloads "$PY" -m compare.figures "$OUT/workloads"

echo "gpu-check: total ${SECONDS}s (target ${TOTAL}s); stages:"
column -t "$OUT/stages.tsv" 2>/dev/null || cat "$OUT/stages.tsv"
if ((${#FAILED[@]})); then
    echo "gpu-check: FAILED stage(s): ${FAILED[*]}"
    exit 1
fi
echo "gpu-check: all stages passed"
