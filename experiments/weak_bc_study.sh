#!/usr/bin/env bash
# Issue 39's comparison from weak BC actors (RESULTS.md, the tables that open the Can and Square
# sections): every method from the same BC actor, 2 seeds as one program, evaluated as its policy
# alone and with best-of-8 selection by its target critics on the same episodes.
#
#   bash experiments/weak_bc_study.sh            # both queues in the background, one core each
#   QUEUE=can bash experiments/weak_bc_study.sh  # one queue in the foreground
#   QUEUE=collect bash experiments/weak_bc_study.sh   # results so far -> docs/results/cmp39_*
#
# Each queue runs its methods one after the other pinned to one core (taskset), so a method's CPU
# seconds are its wall-clock on that core alone, whatever runs on the other. Every method resumes
# from its last checkpoint (every 25k env steps) and a finished one is skipped: rerun the same
# command after an interruption. The BC actors come from docs/results (Can: BC-10, ODE 0.516;
# Square: the clipped BC, ODE 0.19). Results: runs/cmp39_{can,square}/ (comparison.md, plots).
set -u
cd "$(dirname "$0")/.."
CAN_METHODS=${CAN_METHODS:-"ogpo_plus_critic4 qc_n8 qc bc"}
SQUARE_METHODS=${SQUARE_METHODS:-"ogpo_ca_critic4 qc_n8 bc"}
CAN_CORE=${CAN_CORE:-1} SQUARE_CORE=${SQUARE_CORE:-0}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-runs/xla_cache} PYTHONUNBUFFERED=1

base() {   # $1 outdir, $2 BC folder in docs/results: the shared BC actor and demos
  mkdir -p "$1/base" && [ -d "$1/base/bc" ] || cp -r "$2/bc" "$2/demos.hdf5" "$2/demos.json" "$1/base/"
}

can() {
  base runs/cmp39_can docs/results/cmp_can/base
  for m in $CAN_METHODS; do
    taskset -c "$CAN_CORE" python3 experiments/compare.py --config=configs/can.py:quick --methods="$m" --seeds=2 \
      --outdir=runs/cmp39_can --eval_modes=alone,select --config.train.total_env_steps=150000 \
      --config.train.eval_episodes=128 --config.train.eval_every_env_steps=50000 --title="Can (issue 39)" || return 1
  done
}

square() {
  base runs/cmp39_square docs/results/square_quick
  for m in $SQUARE_METHODS; do
    taskset -c "$SQUARE_CORE" python3 experiments/compare.py --config=configs/square.py:quick --methods="$m" --seeds=2 \
      --outdir=runs/cmp39_square --eval_modes=alone,select --config.train.total_env_steps=300000 \
      --config.train.eval_episodes=64 --config.train.eval_every_env_steps=100000 --title="Square (issue 39)" || return 1
  done
}

collect() {   # copy the results so far (finished and partial) to docs/results/cmp39_* and redraw
  for t in can square; do
    src=runs/cmp39_$t dst=docs/results/cmp39_$t
    [ -d $src/methods ] || continue
    mkdir -p $dst/methods
    cp $src/bc_info.json $dst/ 2>/dev/null
    cp $src/methods/*.json $src/methods/*.partial $dst/methods/ 2>/dev/null
    for s in $src/methods/*.run/seed_*; do       # per-seed training logs: the fine-grained curves
      [ -f "$s/metrics.jsonl" ] || continue
      d=$dst/methods/$(basename "$(dirname "$s")" .run).logs/$(basename "$s")
      mkdir -p "$d" && cp "$s/metrics.jsonl" "$d/"
    done
    python3 experiments/compare.py --outdir=$dst --report_only --include_partial --title="$t (issue 39)" > /dev/null
  done
}

case "${QUEUE:-both}" in
  collect) collect ;;
  can) can ;;
  square) square ;;
  both) mkdir -p runs; can > runs/cmp39_can.log 2>&1 & square > runs/cmp39_square.log 2>&1 & wait ;;
  *) echo "QUEUE must be can, square, both or collect, got ${QUEUE}" >&2; exit 2 ;;
esac
