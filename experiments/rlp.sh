#!/usr/bin/env bash
# RL in pretraining (README, "RL in pretraining"), on answer-only chat demonstrations (--task.direct=1: the
# column method appears only as plain worked text in pretraining). From the same pretrained checkpoint, three
# middle phases of about the same compute (wall time on one machine: an RLP step of 16 short thoughts costs
# about a third of a next-token step of 16 rows of 256 tokens, measured), each followed by SFT → GRPO:
#   cpt       next-token continued pretraining, 100 steps at pretraining's final LR
#   rlp       RLP, 300 steps of 16 thoughts (4 positions × 4)
#   rlp-mix   RLP + next-token loss on a full pretraining step each step (RMT-style), 75 steps
#   rlp-hi    rlp at the next step size of the sweep (RLP_HI), where the information gain does rise
# First a step-size sweep of the 300-step RLP phase alone on seed 0 (STEP_SIZES); the arms use the largest
# step size whose RLP phase keeps the model's chat turns, KL(pretrained ‖ after) on assistant tokens < 1
# nat (RLP_LR overrides the pick). Last, the thoughts each model writes before an answer (python -m
# train.think) into $ROOT/thoughts-*.txt.
source "$(dirname "$0")/common.sh"
D1=(--task.direct=1)
STEP_SIZES=${STEP_SIZES:-"0.005 0.02 0.1"}
RLP_HI=${RLP_HI:-0.02}
RLP=(--rlp.warmup_steps=0 --rlp.decay=constant)
parent() { echo --seed="$1" --init_from="$ROOT/pretrain-d1-s$1" --init_phase=pretrain --init_optimizer=true "${D1[@]}"; }

run "pretrain-d1-s0" --seed=0 --phases=pretrain:pretrain "${D1[@]}"
for lr in $STEP_SIZES; do
    run "sweep-lr$lr" $(parent 0) --phases=rlp:rlp "${RLP[@]}" --rlp.steps=300 --rlp.lr_scale="$lr"
done
RLP_LR=${RLP_LR:-$(python - "$ROOT" $STEP_SIZES <<'PY'
import json, sys
root, sizes = sys.argv[1], sys.argv[2:]
kept = [lr for lr in sizes if json.load(open(f"{root}/sweep-lr{lr}/summary.json"))["phases"][-1]["eval"]["drift/kl_chat@init"] < 1]
print(max(kept, key=float) if kept else min(sizes, key=float))
PY
)}
echo "== RLP step size: lr_scale $RLP_LR"
[[ ${SWEEP_ONLY:-} ]] && exit 0
for s in $SEEDS; do
    run "pretrain-d1-s$s" --seed="$s" --phases=pretrain:pretrain "${D1[@]}"
    run "cpt-s$s" $(parent "$s") --phases=cpt:pretrain,sft:sft,grpo:grpo --cpt.steps=100 --cpt.lr_scale=0.1 \
        --cpt.warmup_steps=0 --cpt.decay=constant
    run "rlp-s$s" $(parent "$s") --phases=rlp:rlp,sft:sft,grpo:grpo "${RLP[@]}" --rlp.steps=300 --rlp.lr_scale="$RLP_LR"
    run "rlp-mix-s$s" $(parent "$s") --phases=rlp:rlp,sft:sft,grpo:grpo "${RLP[@]}" --rlp.steps=75 \
        --rlp.lr_scale="$RLP_LR" --rlp.aux=pretrain=1
    run "rlp-hi-s$s" $(parent "$s") --phases=rlp:rlp,sft:sft,grpo:grpo "${RLP[@]}" --rlp.steps=300 --rlp.lr_scale="$RLP_HI"
done
python -m train.compare "$ROOT"/cpt-s*/ "$ROOT"/rlp-s*/ "$ROOT"/rlp-mix-s*/ "$ROOT"/rlp-hi-s*/ --out="$ROOT/rlp" \
    --metrics='task/accuracy,task/pass@*,task/length,rlp/*,drift/kl_*@init' \
    --curves='rlp/info_gain,rlp/length,rlp/truncated,grpo/reward'
for s in $SEEDS; do  # information gain of thoughts at answer positions, before and after each middle phase
    python -m train.think "$ROOT/pretrain-d1-s$s" --phase=pretrain --n=200 > "$ROOT/thoughts-pretrain-s$s.txt"
    for arm in cpt rlp rlp-mix rlp-hi; do
        for phase in ${arm%-*} grpo; do
            python -m train.think "$ROOT/$arm-s$s" --phase="$phase" --n=200 > "$ROOT/thoughts-$arm-$phase-s$s.txt"
        done
    done
done
tail -n 2 "$ROOT"/thoughts-*.txt
