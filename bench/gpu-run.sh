#!/usr/bin/env bash
# How bench/results/train-gpu.{json,md} were made: `loraforge bench train` on a CUDA machine that has
# PyTorch but no network and no copy of the weights (Gemma 3 270M is too large to copy there, so the
# model is built from its config.json with random weights: throughput and memory do not depend on
# the weights' values). Packages the machine's image lacks travel as wheels in .whl/; the model
# folder (config + tokenizer, no weights) in .gpu/model/. Prepare both on a machine with the model:
#   mkdir -p .gpu/model && cp ~/.cache/loraforge/models/gemma-3-270m*/{config,generation_config,tokenizer_config}.json .gpu/model/
#   xz -9 -c ~/.cache/loraforge/models/gemma-3-270m*/tokenizer.json > .gpu/model/tokenizer.json.xz
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl transformers==5.23.0 peft==0.21.2 \
#     trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 liger-kernel==0.8.5 pydantic==2.14.3 \
#     pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
# Usage: OUT=dir bash bench/gpu-run.sh   (JOBS, STEPS, BATCH, MAXLEN override the defaults below;
#   PROFILE=1 then also runs `python3 -m loraforge.bench.gpu_profile 16 5` into $OUT/gpu-profile.txt)
set -uo pipefail
OUT=${OUT:-bench/results}
WHEELS=${WHEELS-.whl}
if [ -n "$WHEELS" ] && [ -d "$WHEELS" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src PYTHONUNBUFFERED=1
[ -f .gpu/model/tokenizer.json ] || python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('.gpu/model/tokenizer.json.xz'), open('.gpu/model/tokenizer.json', 'wb'))"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
python3 - <<'PY'
from importlib.metadata import PackageNotFoundError, version
for name in ("torch", "transformers", "peft", "trl", "liger-kernel"):
    try:
        print(name, version(name))
    except PackageNotFoundError:
        print(name, "absent")
PY
python3 -m loraforge.cli bench train --model .gpu/model --random-weights --ablation \
  --steps "${STEPS:-20}" --batch-size "${BATCH:-16}" --max-length "${MAXLEN:-512}" --matmul-size "${MATMUL:-8192}" \
  --jobs "${JOBS:-trl-bf16,trl-bf16-liger,trl-bf16-weights,trl-bf16-weights-liger,trl-bf16-weights-padding-free,trl-bf16-weights-packing,trl-bf16-weights-no-checkpointing,trl-bf16-weights-liger-packing-no-checkpointing,loraforge,loraforge-no-packing,loraforge-no-compile}" \
  --out "$OUT" --name train-gpu
status=$?
if [ -n "${PROFILE:-}" ]; then
  python3 -m loraforge.bench.gpu_profile --model .gpu/model "${BATCH:-16}" 5 > "$OUT/gpu-profile.txt" || status=1
fi
exit $status
