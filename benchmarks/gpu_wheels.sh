#!/usr/bin/env bash
# Wheels for a GPU machine that cannot reach a package registry but already has
# JAX (CUDA build), flax, optax, pandas, pyarrow, statsmodels, matplotlib and
# seaborn: the pure-Python packages the engine needs beyond those, downloaded
# here into .whl/ (git-ignored), for Python 3.12 by default. Carry .whl/ to the
# GPU machine with the working tree; benchmarks/gpu_check.sh installs whatever
# .whl/ holds before it starts.
#   bash benchmarks/gpu_wheels.sh [PYTHON_VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-3.12}"
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl gymnax==1.0.1 gymnasium==1.3.0 farama-notifications==0.0.6
ls -l .whl
