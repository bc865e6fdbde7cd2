#!/usr/bin/env bash
# The H100 rows of benchmarks/results/accuracy.json: 16 runs at once on one GPU machine (one CPU
# thread each; the CNN runs on its CPU). Extra arguments (e.g. --model DIR --st-python PY) are
# passed to every run. Logs: benchmarks/accuracy/work/logs/.
set -uo pipefail
cd "$(dirname "$0")/../.."
LOGS=benchmarks/accuracy/work/logs
mkdir -p "$LOGS"
G=(--gpu-id 0 --threads 1 --device "NVIDIA H100 (16 runs at once)")
C=(--threads 1 --device "H100 machine's CPU, 1 thread (16 runs at once)")
LR5=(--set training.optimizer.learn_rate.initial_rate 5e-4)
CLS=(--set components.textcat.model.pooling '"cls"')
go() { name=$1; shift; python benchmarks/accuracy/run.py "$@" > "$LOGS/$name.log" 2>&1 & }
go ewt-trf --task ewt --system trf "${G[@]}" "$@"
go ewt-trf-lr5e-4 --task ewt --system trf --tag lr5e-4 "${LR5[@]}" "${G[@]}" "$@"
go ewt-mix --task ewt --system trf --tag scalar-mix-lr5e-4 \
  --set components.morphologizer.model.tok2vec.layers '"scalar_mix"' \
  --set components.tagger.model.tok2vec.layers '"scalar_mix"' \
  --set components.parser.model.tok2vec.layers '"scalar_mix"' "${LR5[@]}" "${G[@]}" "$@"
go ewt-bf16 --task ewt --system trf --tag bf16-lr5e-4 "${LR5[@]}" \
  --set components.trf.mixed_precision true "${G[@]}" "$@"
go ewt-st --task ewt --system st "${G[@]}" "$@"
go ewt-cnn --task ewt --system cnn --max-steps 3000 "${C[@]}" "$@"
go conll-trf --task conll --system trf "${G[@]}" "$@"
go conll-trf-lr5e-4 --task conll --system trf --tag lr5e-4 "${LR5[@]}" "${G[@]}" "$@"
go conll-plain --task conll --system trf-plain --tag lr5e-4 "${LR5[@]}" "${G[@]}" "$@"
go conll-st --task conll --system st "${G[@]}" "$@"
go conll-cnn --task conll --system cnn --max-steps 3000 "${C[@]}" "$@"
go emotion-trf --task emotion --system trf --tag lr5e-4 "${LR5[@]}" "${G[@]}" "$@"
go emotion-cls --task emotion --system trf --tag cls-lr5e-4 "${CLS[@]}" "${LR5[@]}" "${G[@]}" "$@"
go emotion-frozen --task emotion --system trf-frozen --tag cls "${CLS[@]}" "${G[@]}" "$@"
go emotion-st --task emotion --system st "${G[@]}" "$@"
go emotion-cnn --task emotion --system cnn --max-steps 3000 "${C[@]}" "$@"
wait
python benchmarks/accuracy/run.py --table
