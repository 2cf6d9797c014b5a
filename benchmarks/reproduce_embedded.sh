#!/usr/bin/env bash
# The CPU study behind docs/RESULTS.md: four pretraining families and a random-init
# ablation, every protocol, three seeds, on the embedded mnist5k data (offline).
#   bash benchmarks/reproduce_embedded.sh [RESULTS_DB]
# Then regenerate the tables and the plot:
#   python benchmarks/leaderboard.py --results docs/results.db --update docs/RESULTS.md \
#       --plot docs/results.png
set -euo pipefail
cd "$(dirname "$0")/.."
db=${1:-docs/results.db}
run() { python benchmarks/eval.py --protocol all --dataset mnist5k --results "$db" --no-progress "$@"; }
for seed in 0 1 2; do
  run --model zoo:rotation_mnist5k --seed "$seed"
  run --model zoo:simclr_mnist5k --seed "$seed"
  run --model zoo:supervised_digits --seed "$seed"       # transfer: digits -> mnist5k
  run --model zoo:bigan_mnist5k --seed "$seed"
  run --model zoo:rotation_mnist5k --weights random --seed "$seed"   # ablation
done
# Table 1's check on the default model: gradients of re-initialised parts (or a random
# ω) beside the pretrained activations.
for seed in 0 1 2; do
  for setting in "THETA1 random ABLATION.THETA2 random ABLATION.PROBE random" \
                 "THETA2 random" "PROBE random"; do
    for protocol in grad gradfeat; do
      # shellcheck disable=SC2086
      run --model zoo:rotation_mnist5k --seed "$seed" --protocol "$protocol" ABLATION.$setting
    done
  done
done
