# Shared by the experiment scripts: where runs go, which seeds, and `run NAME ARGS...`, which trains one run
# into $ROOT/NAME unless it has finished already (so a script that stopped halfway picks up where it was) and
# appends its wall time to $ROOT/times.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-runs/experiments}
SEEDS=${SEEDS:-"0 1 2"}
read -r -a EXTRA <<< "${EXTRA:-}"  # options added to every new run, e.g. EXTRA=--preset=smoke for a quick check
mkdir -p "$ROOT"

run() {
    local name=$1; shift
    if [[ -f $ROOT/$name/summary.json ]]; then
        echo "== $name: finished already"
        return
    fi
    if [[ -d $ROOT/$name ]]; then  # an interrupted run continues from its last checkpoint
        set -- --resume "$ROOT/$name"
    else
        set -- --out="$ROOT/$name" "$@" ${EXTRA[@]+"${EXTRA[@]}"}
    fi
    echo "== $name: python train.py $*"
    local start=$SECONDS
    python train.py "$@" > "$ROOT/$name.log" 2>&1 || { tail -5 "$ROOT/$name.log"; return 1; }
    printf '%s\t%ss\n' "$name" $((SECONDS - start)) | tee -a "$ROOT/times.tsv"
}

# The pretraining phase of the default run, alone: the parent that the experiments branch from.
pretrain() {  # pretrain SEED EXTRA_ARGS...
    local seed=$1; shift
    run "pretrain-s$seed" --seed="$seed" --phases=pretrain:pretrain "$@"
}
