#!/usr/bin/env bash
# Blending SFT and RL (README, "Blending SFT and RL"), on the all-worked curriculum (--task.direct=0): every
# recipe has 400 pretraining steps and 190 steps after them, and is evaluated on 500 held-out problems.
#   sft-only      pretrain → SFT (190 steps)                     the baseline
#   sft-grpo      pretrain → SFT (150) → GRPO (40)               the default curriculum
#   luffy         … → GRPO with one demonstration per group      (LUFFY)
#   prefix        … → GRPO, half of each group from a demonstration prefix, cosine 80% → 0 (Prefix-RFT)
#   decay         … → GRPO + SFT, the SFT weight cosine 1 → 0
#   srft          … → GRPO + SFT, SRFT's entropy-aware weight exp(−H)
#   zero-luffy    pretrain → GRPO with one demonstration per group (190 steps, no SFT stage)
#   …-lr          luffy and srft again at lr_scale 0.1 (3e-4, the LR of SFT's last steps) instead of GRPO's 0.02:
#                 the SFT-only baseline's extra 40 steps run at 3e-4 to 1.5e-4, GRPO's at 6e-5
# The guided recipes branch from sft-grpo's SFT checkpoint (same seed and optimizer state: the branch
# reproduces sft-grpo's GRPO phase exactly when nothing is changed), so their SFT stage is sft-grpo's.
source "$(dirname "$0")/common.sh"
D0=(--task.direct=0)
for s in $SEEDS; do
    run "pretrain-d0-s$s" --seed="$s" --phases=pretrain:pretrain "${D0[@]}"
    from=(--seed="$s" --init_from="$ROOT/pretrain-d0-s$s" --init_phase=pretrain --init_optimizer=true "${D0[@]}")
    run "sft-only-s$s" "${from[@]}" --phases=sft:sft --sft.steps=190
    run "sft-grpo-s$s" "${from[@]}" --phases=sft:sft,grpo:grpo
    after_sft=(--seed="$s" --init_from="$ROOT/sft-grpo-s$s" --init_phase=sft --init_optimizer=true "${D0[@]}"
               --phases=grpo:grpo)
    run "luffy-s$s" "${after_sft[@]}" --grpo.demos=1
    run "prefix-s$s" "${after_sft[@]}" --grpo.prefix=cosine:0.8:0 --grpo.prefix_rows=4
    run "decay-s$s" "${after_sft[@]}" --grpo.aux=sft=1 --grpo.aux_schedule=cosine:1:0
    run "srft-s$s" "${after_sft[@]}" --grpo.aux=sft=1 --grpo.aux_schedule=srft:1
    run "zero-luffy-s$s" "${from[@]}" --phases=grpo:grpo --grpo.steps=190 --grpo.demos=1
done
for s in $SEEDS; do
    after_sft=(--seed="$s" --init_from="$ROOT/sft-grpo-s$s" --init_phase=sft --init_optimizer=true "${D0[@]}"
               --phases=grpo:grpo --grpo.lr_scale=0.1)
    run "luffy-lr-s$s" "${after_sft[@]}" --grpo.demos=1
    run "srft-lr-s$s" "${after_sft[@]}" --grpo.aux=sft=1 --grpo.aux_schedule=srft:1
done
python -m train.compare "$ROOT"/sft-only-s*/ "$ROOT"/sft-grpo-s*/ "$ROOT"/luffy-s*/ "$ROOT"/prefix-s*/ \
    "$ROOT"/decay-s*/ "$ROOT"/srft-s*/ "$ROOT"/zero-luffy-s*/ "$ROOT"/luffy-lr-s*/ "$ROOT"/srft-lr-s*/ \
    --out="$ROOT/blend" \
    --metrics='task/accuracy,task/pass@*,task/length,task/entropy,drift/kl_chat@init' \
    --curves='grpo/reward,grpo/demo_*,grpo/aux_weight/*,grpo/prefix_tokens'
