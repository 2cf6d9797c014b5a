#!/usr/bin/env bash
# The paper's Table 1 ablation on CIFAR-10 with a BiGAN encoder (needs the CIFAR-10
# files under data/ and checkpoints/bigan_cifar10.pt; see configs/paper/bigan_cifar10.yaml).
#   bash benchmarks/reproduce_table1.sh [RESULTS_DB]
set -euo pipefail
cd "$(dirname "$0")/.."
db=${1:-table1.db}
for depth in top1 top2 top3; do
  config=paper/table1_bigan_cifar10_$depth
  python benchmarks/eval.py --config "$config" --protocol linear --results "$db"
  python benchmarks/eval.py --config "$config" --protocol finetune --results "$db"
  for theta1 in random pretrained; do
    for theta2 in random pretrained; do
      for probe in random pretrained; do
        for protocol in grad gradfeat; do
          python benchmarks/eval.py --config "$config" --protocol "$protocol" \
            --results "$db" ABLATION.THETA1 "$theta1" ABLATION.THETA2 "$theta2" \
            ABLATION.PROBE "$probe"
        done
      done
    done
  done
done
