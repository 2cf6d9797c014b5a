#!/usr/bin/env bash
# The CPU study behind docs/RESULTS.md, on the embedded mnist5k data (offline) with the
# zoo's shipped weights:
#  1. four pretraining families and a random-weights row, every protocol, with all
#     training labels and with 10 % and 2 % of them, three seeds;
#  2. the paper's Table 1 ablation on the paper's encoder (zoo:bigan_ali_mnist5k) and on
#     the default rotation model: the gradient term of grad and gradfeat taken through
#     a random θ2 and/or a random ω under the pretrained θ1, or everything random, with
#     θ2 one, two and three blocks deep, beside the linear probe and fine-tuning of the
#     same θ2, three seeds, 10 epochs; each random part drawn both ways
#     (ABLATION.INIT default: the layer's own initialisation; ntk: the authors' init()).
#   bash benchmarks/reproduce_embedded.sh [RESULTS_DB] [PARALLEL_JOBS] [PATTERN]
# PATTERN (a grep -E regex) keeps only the matching runs, e.g. 'zoo:bigan'.
# Runs are in seed order, seed 0 of everything first. The study can be stopped and
# started again: a run that finished is listed in RESULTS_DB.done and not run again
# (delete that file to rerun everything); RESULTS_DB.times keeps each run's seconds.
# The whole study takes about 13.5 core-hours (48,571 process-seconds for docs/RESULTS.md,
# one thread a run): about 6.7 hours with two jobs on two cores.
# Then regenerate the tables and the plot:
#   python benchmarks/leaderboard.py --results docs/results.db --update docs/RESULTS.md \
#       --plot docs/results.png
set -euo pipefail
cd "$(dirname "$0")/.."
db=${1:-docs/results.db}
jobs=${2:-2}
pattern=${3:-.}
# The ablation trains 10 epochs (the defaults) instead of mnist5k's 30: it has 162 runs.
ablation_epochs=10

# One line per run: the arguments of benchmarks/eval.py after the common ones.
runs() {
  local seed model fraction split setting
  for seed in 0 1 2; do
    for model in zoo:rotation_mnist5k zoo:simclr_mnist5k zoo:supervised_digits \
                 zoo:bigan_ali_mnist5k "zoo:rotation_mnist5k --weights random"; do
      for fraction in 1.0 0.1 0.02; do
        echo "--protocol all --model $model --seed $seed --label-fraction $fraction"
      done
    done
    for model in bigan_ali_mnist5k rotation_mnist5k; do
      if [ "$model" = bigan_ali_mnist5k ]; then
        splits=("conv5" "conv4 conv5" "conv3 conv4 conv5")
      else
        splits=("layer3.0" "layer2.0 layer3.0" "layer1.0 layer2.0 layer3.0")
      fi
      for split in "${splits[@]}"; do
        # Every split's pretrained row, then its rows with a random part (θ1 θ2 ω).
        echo "--protocol linear grad gradfeat finetune --model zoo:$model --split $split" \
             "--epochs $ablation_epochs --seed $seed"
        for init in default ntk; do
          for setting in "random random random" "pretrained random random" \
                         "pretrained random pretrained" "pretrained pretrained random"; do
            set -- $setting
            echo "--protocol grad gradfeat --model zoo:$model --split $split" \
                 "--epochs $ablation_epochs --seed $seed" \
                 "ABLATION.THETA1 $1 ABLATION.THETA2 $2 ABLATION.PROBE $3 ABLATION.INIT $init"
          done
        done
      done
    done
  done
}

export db
touch "$db.done"
runs | grep -E -- "$pattern" | { grep -v -x -F -f "$db.done" || true; } | xargs -r -P "$jobs" -L 1 sh -c \
  'start=$(date +%s)
   OMP_NUM_THREADS=1 python benchmarks/eval.py --dataset mnist5k --results "$db" --no-progress "$@" >/dev/null || { echo "failed: $*" >&2; exit 1; }
   echo "$(( $(date +%s) - start )) $*" >> "$db.times"
   echo "$*" >> "$db.done"' sh
