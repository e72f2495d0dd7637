#!/usr/bin/env bash
# RL in pretraining (README, "RL in pretraining"), on answer-only chat demonstrations (--task.direct=1: the
# column method appears only as plain worked text in pretraining). From the same pretrained checkpoint:
#   cpt       next-token continued pretraining, 100 steps of 16 rows at pretraining's final LR → SFT → GRPO
#   rlp       RLP, 100 steps of 16 thoughts (4 positions × 4)                              → SFT → GRPO
#   rlp-mix   RLP + next-token loss on a full pretraining step each step (RMT-style)      → SFT → GRPO
# An RLP step of 16 thoughts costs about what a next-token step of 16 rows does (README), so rlp is
# compute-matched to cpt by steps; rlp-mix pays for both. First a step-size sweep of the RLP phase alone on
# seed 0 (STEP_SIZES), whose result picks RLP_LR for the arms.
source "$(dirname "$0")/common.sh"
D1=(--task.direct=1)
STEP_SIZES=${STEP_SIZES:-"0.005 0.02 0.1"}
RLP_LR=${RLP_LR:-0.02}
RLP=(--rlp.steps=100 --rlp.warmup_steps=0 --rlp.decay=constant)
parent() { echo --seed="$1" --init_from="$ROOT/pretrain-d1-s$1" --init_phase=pretrain --init_optimizer=true "${D1[@]}"; }

run "pretrain-d1-s0" --seed=0 --phases=pretrain:pretrain "${D1[@]}"
for lr in $STEP_SIZES; do
    run "sweep-lr$lr" $(parent 0) --phases=rlp:rlp "${RLP[@]}" --rlp.lr_scale="$lr"
done
[[ ${SWEEP_ONLY:-} ]] && exit 0
for s in $SEEDS; do
    run "pretrain-d1-s$s" --seed="$s" --phases=pretrain:pretrain "${D1[@]}"
    run "cpt-s$s" $(parent "$s") --phases=cpt:pretrain,sft:sft,grpo:grpo --cpt.steps=100 --cpt.lr_scale=0.1 \
        --cpt.warmup_steps=0 --cpt.decay=constant
    run "rlp-s$s" $(parent "$s") --phases=rlp:rlp,sft:sft,grpo:grpo "${RLP[@]}" --rlp.lr_scale="$RLP_LR"
    run "rlp-mix-s$s" $(parent "$s") --phases=rlp:rlp,sft:sft,grpo:grpo "${RLP[@]}" --rlp.lr_scale="$RLP_LR" \
        --rlp.aux=pretrain=1
done
python -m train.compare "$ROOT"/cpt-s*/ "$ROOT"/rlp-s*/ "$ROOT"/rlp-mix-s*/ --out="$ROOT/rlp" \
    --metrics='task/accuracy,task/pass@*,task/length,rlp/*,drift/kl_*@init' \
    --curves='rlp/info_gain,rlp/length,grpo/reward'
