#!/usr/bin/env bash
# The issue-5 comparisons (RESULTS.md, "Which OGPO variant?" under the toy task and Can) as parallel processes on one
# machine: Can headline methods x 2 seeds, and every method x 3 seeds on the two toy tasks.
# Each process runs experiments/compare.py for a few methods; finished methods land in
# runs/cmp_*/methods/<name>.json (unfinished ones in <name>.partial). Afterwards rebuild the
# tables and plots on any machine with
#     python experiments/compare.py --outdir=runs/cmp_toy --report_only      (and cmp_toy_speed, cmp_can)
#
# Needs the shared BC actors first (runs/cmp_toy/base, runs/cmp_toy_speed/base: made by
# compare.py itself when missing, but prepare them once before starting processes in parallel;
# Can uses the BC actor of a finished `train.py --config=configs/can.py:quick` run in $CAN_BC).
#
#   TOY_STEPS=100000 CAN_BC=runs/canD bash experiments/run_comparisons.sh
# Set PACK=<file.tgz> to re-pack logs + results there every 20 s (for machines that may be
# reclaimed). GPU processes share the card: XLA_PYTHON_CLIENT_MEM_FRACTION is set per process.
set -u
cd "$(dirname "$0")/.."
TOY_STEPS=${TOY_STEPS:-100000}
CAN_BC=${CAN_BC-runs/canD}        # empty: use (or make) runs/cmp_can/base
CAN_METHODS=${CAN_METHODS:-"ogpo_ca ogpo bptt ogpo_plus grpo_std min_targets"}
CAN_SEEDS=${CAN_SEEDS:-2}
STOP_AFTER=${STOP_AFTER:-0}       # >0: stop every process after this many seconds (leased machines);
                                  # unfinished methods keep their curves in runs/cmp_*/methods/*.partial
EXTRA=${EXTRA:-}                 # extra flags for every compare.py call (smoke tests)
CAN=${CAN:-1}                     # 0: toy tasks only
# NGROUPS (default all 5): run only the first N method groups of the toy tasks
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.05} PYTHONUNBUFFERED=1
mkdir -p runs/logs
pids=()
launch() { local name=$1; shift; python3 experiments/compare.py "$@" $EXTRA > "runs/logs/$name.log" 2>&1 & pids+=($!); }

if [ "$CAN" = 1 ]; then
  for m in $CAN_METHODS; do
    launch "can_$m" --config=configs/can.py:quick ${CAN_BC:+--bc_workdir="$CAN_BC"} --outdir=runs/cmp_can --methods=$m --seeds="$CAN_SEEDS" --title="Can (quick preset)"
  done
fi
groups=("ogpo_ca,ogpo,sb_only,ogpo_plus" "bptt,grpo_std,min_targets,ogpo_nn" "ogpo_chi2,value_baseline,ogpo_ca_penultimate,ogpo_ca_q_vr"
        "awr_fm,aw_ogpo,aw_ogpo_nn,ofpo" "ogpo_ca_success_td,ogpo_ca_best_of_n")
NGROUPS=${NGROUPS:-${#groups[@]}}
for i in $(seq 0 $((NGROUPS - 1))); do
  launch "toy_$i" --config=configs/toy.py --outdir=runs/cmp_toy --methods="${groups[$i]}" --seeds=3 \
    --config.train.total_env_steps="$TOY_STEPS" --config.train.eval_every_env_steps=10000 --title="point_gaps"
  launch "speed_$i" --config=configs/toy.py:speed --outdir=runs/cmp_toy_speed --methods="${groups[$i]}" --seeds=3 \
    --config.train.total_env_steps="$TOY_STEPS" --config.train.eval_every_env_steps=10000 --title="point_gaps:speed (time limit)"
done

start=$SECONDS
pack() { [ -n "${PACK:-}" ] && tar czf "$PACK.tmp" --exclude="*.ckpt" runs/logs runs/cmp_*/methods runs/cmp_*/bc_info.json 2>/dev/null && mv "$PACK.tmp" "$PACK"; }
while :; do
  running=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && running=$((running + 1)); done
  [ "$running" = 0 ] && break
  if [ "$STOP_AFTER" -gt 0 ] && [ $((SECONDS - start)) -ge "$STOP_AFTER" ]; then
    echo "STOP_AFTER=$STOP_AFTER s reached: stopping $running process(es)"; kill "${pids[@]}" 2>/dev/null; sleep 2; break
  fi
  pack; sleep 20
done
wait
pack
grep -h "final ODE\|Error\|error" runs/logs/*.log | tail -60
