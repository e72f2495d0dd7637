#!/usr/bin/env bash
# Stage order, pass@k and out-of-distribution length, from one set of runs (README, "Experiments").
#   pretrain → SFT → GRPO   the default curriculum, branched from the pretrained checkpoint
#   pretrain → GRPO         zero-RL
#   pretrain → GRPO → SFT
# Every run evaluates 200 held-out problems with 16 samples each (pass@1..16) and the held-out set `long`:
# 4-digit problems, a length no phase trains on (the default task has 1-3 digits).
source "$(dirname "$0")/common.sh"
EVAL=(--task.eval_problems=200 --task.pass_k=16 --eval.sets=long:digits=4)
for s in $SEEDS; do
    pretrain "$s" "${EVAL[@]}"
    from=(--seed="$s" --init_from="$ROOT/pretrain-s$s" --init_phase=pretrain --init_optimizer=true "${EVAL[@]}")
    run "sft-grpo-s$s" "${from[@]}" --phases=sft:sft,grpo:grpo
    run "zero-rl-s$s" "${from[@]}" --phases=grpo:grpo
    run "grpo-sft-s$s" "${from[@]}" --phases=grpo:grpo,sft:sft
done
python -m train.compare "$ROOT"/pretrain-s*/ "$ROOT"/sft-grpo-s*/ "$ROOT"/zero-rl-s*/ "$ROOT"/grpo-sft-s*/ \
    --out="$ROOT/stages" --metrics='task/accuracy,task/pass@1,task/pass@16,task/entropy,task/length,long/accuracy,long/pass@16,drift/kl_*@init,drift/dist@init'
