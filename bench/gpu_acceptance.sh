#!/usr/bin/env bash
# The first thing to run on a GPU: one command, about 8 minutes on one H100/H200 (an estimate: see
# bench/README.md, "GPU acceptance"), compilation and autotuning included.
#
#   bash bench/gpu_acceptance.sh              on a CUDA machine: the parts below at full size
#   bash bench/gpu_acceptance.sh --dry-run    anywhere: the same parts at tiny sizes (CI runs this on a CPU)
#
# Parts, in order (each has a time limit; a part that fails or runs out of time does not stop the others):
#   1. tests      the GPU-marked tests (pytest -m gpu), in three processes at once: they check numbers, not
#                 speed, so they may share the GPU, and each process compiles its own kernels on its own core
#   2. bench      the benchmark suites at their headline shapes, alone on the GPU, into bench/results/$GPU.json
#   3. report     bench.report (tables and plots, headed by commit, GPU, torch and Triton versions) and
#                 bench.check (the ratio floors of bench/floors.json)
#   4. train      the default schedule, shortened, once on the Triton kernels and once on the PyTorch
#                 references, compared step by step by bench.compare_runs
# Writes bench/results/$GPU.json, bench/results/$GPU/ (report.md, plots, acceptance.md with every part's
# status, wall time and output tail). A dry run writes the same under $ACCEPTANCE_OUT (default
# /tmp/tritium-acceptance), never into bench/results/. Exit status: 0 when every part passed, 1 otherwise.
set -uo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$SELF")/.."

DRY=0 PART=""  # --part NAME: run one part (the script calls itself this way, under `timeout`)
while [[ $# -gt 0 ]]; do
    case $1 in
        --dry-run) DRY=1; shift ;;
        --part) PART=$2; shift 2 ;;
        *) echo "error: usage: bash bench/gpu_acceptance.sh [--dry-run]" >&2; exit 2 ;;
    esac
done
if [[ $DRY == 0 ]] && ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    [[ -z $PART ]] && echo "no CUDA device: running the dry run (tiny sizes, no timing claims)"
    DRY=1
fi

# The benchmarks' headline shapes, as pytest -k terms over the test ids (bench/README.md lists them):
#   attention   T 1024 / head dim 64 (GPT-2) and T 4096 / head dim 128, causal; Triton, SDPA, reference
#   losses      cross-entropy N 8192 V 50304; fused head + CE N 8192 d 768 V 50304; log-probs N 16384
#               V 131072; fused head + GRPO N 4096 V 131072 d 2048; the device copy bandwidth
#   train step  every phase and the GRPO rollout, GPT-2-124M size, on all three paths
HEADLINE="1024-64-True or 4096-128-True or N8192-V50304 or N8192-d768-V50304"
HEADLINE+=" or (test_bench_token_logprobs and 16384-131072) or (test_bench_linear_grpo_loss and 4096-131072)"
HEADLINE+=" or test_device_copy_bandwidth or test_train_step or test_grpo_rollout"

if [[ $DRY == 1 ]]; then
    GPU=cpu
    OUT="${ACCEPTANCE_OUT:-/tmp/tritium-acceptance}"
    JSON="$OUT/$GPU.json"
    LIMIT=(tests=120 bench=120 report=60 train=180)  # generous: CI machines are slow and shared
    # the smoke preset, one step per phase (as tests/test_kernel_paths.py, shorter); both paths compute in fp32
    # on a CPU, so their losses agree to 1e-3
    TRAIN=(--preset=smoke --model.seq_len=40 --eval_rows=2 --task.eval_problems=2 --task.pass_k=0
           --task.max_new_tokens=8 --grpo.max_new_tokens=8 --threads=1)
    for p in pretrain sft grpo; do TRAIN+=(--$p.steps=1 --$p.batch_size=2 --$p.micro_batch_size=2); done
    COMPARE=(--rtol 1e-3)
else
    GPU=$(python -c "from bench.common import gpu_slug; print(gpu_slug())")
    OUT="bench/results/$GPU"
    JSON="bench/results/$GPU.json"
    LIMIT=(tests=180 bench=180 report=30 train=90)  # 8 minutes in all: each part is cut at its limit
    # the default schedule, shortened; bf16 kernels vs fp32 references: pretraining and SFT losses compared
    TRAIN=(--preset=default --pretrain.steps=80 --sft.steps=30 --grpo.steps=3 --task.eval_problems=64
           --eval_rows=8)
    COMPARE=(--rtol 0.05 --phases pretrain,sft)
fi
gpu_tests() {
    # three shards that together are exactly the GPU-marked tests; each process compiles for itself
    local pids=() rc=0 logs i
    logs=$(mktemp -d)
    python -m pytest tests/ -m gpu -q -p no:cacheprovider -k "three_ways and dtype0" > "$logs/1" 2>&1 &
    pids+=($!)
    python -m pytest tests/ -m gpu -q -p no:cacheprovider -k "three_ways and not dtype0" > "$logs/2" 2>&1 &
    pids+=($!)
    python -m pytest tests/ -m gpu -q -p no:cacheprovider -k "not three_ways" > "$logs/3" 2>&1 &
    pids+=($!)
    for i in "${pids[@]}"; do wait "$i" || rc=1; done
    for i in 1 2 3; do echo "--- shard $i"; tail -n 12 "$logs/$i"; done
    return $rc
}

bench_suites() {
    if [[ $DRY == 1 ]]; then  # most CUDA ids do not exist on a CPU: the same selection, cut to one train step
        python -m pytest bench/ -q -p no:cacheprovider -k "($HEADLINE) and pretrain-" --benchmark-json="$JSON"
    else
        python -m pytest bench/ -q -p no:cacheprovider -k "$HEADLINE" --benchmark-json="$JSON"
    fi
}

report() {
    python -m bench.report "$JSON" --out "$OUT" && python -m bench.check "$JSON"
}

train_both() {
    local runs; runs=$(mktemp -d)
    python train.py "${TRAIN[@]}" --model.kernels=triton --out="$runs/triton" > "$runs/triton.log" 2>&1 \
        || { tail -n 30 "$runs/triton.log"; return 1; }
    python train.py "${TRAIN[@]}" --model.kernels=reference --out="$runs/reference" > "$runs/reference.log" 2>&1 \
        || { tail -n 30 "$runs/reference.log"; return 1; }
    python -m bench.compare_runs "$runs/reference" "$runs/triton" "${COMPARE[@]}"
}

if [[ -n $PART ]]; then
    case $PART in
        tests) gpu_tests ;; bench) bench_suites ;; report) report ;; train) train_both ;;
        *) echo "error: no part $PART" >&2; exit 2 ;;
    esac
    exit $?
fi

declare -A LIMIT_S
for kv in "${LIMIT[@]}"; do LIMIT_S[${kv%%=*}]=${kv#*=}; done
mkdir -p "$OUT"
SUMMARY="$OUT/acceptance.md"
FAILED=0
STARTED=$(date +%s)
{
    echo "# GPU acceptance run"
    echo
    echo "$(date -Is) | $(python -c "from bench.common import provenance_line, provenance; print(provenance_line(provenance()))")"
    echo
    echo "| part | status | wall s | limit s |"
    echo "|---|---|---|---|"
} > "$SUMMARY"

# run_part NAME: this script's part NAME under its time limit, logged to $OUT/NAME.log, one summary row.
run_part() {
    local name=$1 t0 rc status=ok
    t0=$(date +%s)
    echo "=== $name (at most ${LIMIT_S[$name]} s)"
    timeout --kill-after=10 "${LIMIT_S[$name]}" bash "$SELF" --part "$name" $( [[ $DRY == 1 ]] && echo --dry-run ) \
        > "$OUT/$name.log" 2>&1
    rc=$?
    tail -n 25 "$OUT/$name.log"
    if [[ $rc == 124 || $rc == 137 ]]; then status="out of time"; elif [[ $rc != 0 ]]; then status="FAIL (exit $rc)"; fi
    [[ $status != ok ]] && FAILED=1
    echo "| $name | $status | $(( $(date +%s) - t0 )) | ${LIMIT_S[$name]} |" >> "$SUMMARY"
}

for name in tests bench report train; do run_part "$name"; done
{
    echo
    echo "Total $(( $(date +%s) - STARTED )) s. Each part's output: $OUT/<part>.log."
    [[ $DRY == 1 ]] && echo "Dry run: tiny sizes on a CPU; these times say nothing about a GPU."
} >> "$SUMMARY"
cat "$SUMMARY"
exit $FAILED
