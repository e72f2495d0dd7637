#!/usr/bin/env bash
# Forgetting under SFT and under RL (README, "Experiments"): SFT on addition alone, then a second stage on
# subtraction alone, once as SFT and once as GRPO, both branched from the same pretrained checkpoint (the
# SFT-on-addition phase is the same in both arms: same seed, same data). The held-out sets `add` and `sub`
# measure each operation; drift/kl_*@sft is how far the second stage moved the model from the SFT one.
source "$(dirname "$0")/common.sh"
EVAL=(--eval.sets=add:ops=+/sub:ops=-)
for s in $SEEDS; do
    pretrain "$s" --task.eval_problems=200 --task.pass_k=16 --eval.sets=long:digits=4  # stages.sh's parent
    from=(--seed="$s" --init_from="$ROOT/pretrain-s$s" --init_phase=pretrain --init_optimizer=true "${EVAL[@]}"
          --sft.task=ops=+)
    run "forget-sft-s$s" "${from[@]}" --phases=sft:sft,sft2:sft --sft2.task=ops=- \
        --sft2.steps=150 --sft2.lr_scale=0.5 --sft2.warmup_steps=0
    run "forget-grpo-s$s" "${from[@]}" --phases=sft:sft,grpo:grpo --grpo.task=ops=-
done
python -m train.compare "$ROOT"/forget-sft-s*/ "$ROOT"/forget-grpo-s*/ --out="$ROOT/forgetting" \
    --metrics='add/accuracy,sub/accuracy,task/accuracy,drift/kl_*@sft,drift/dist@sft'
