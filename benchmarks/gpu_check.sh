#!/usr/bin/env bash
# One prepared check of the project on the accelerator JAX sees (issue 25); see benchmarks/gpu_check.py.
#   bash benchmarks/gpu_check.sh --out DIR [--cpu] [--skip-tests] [--deadline SECONDS]
# Runs from the repository root with the package on the path; PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/workflow${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
export PYTHONUNBUFFERED=1
# A machine with no registry: the wheels benchmarks/gpu_wheels.sh put in .whl/ are installed first.
if compgen -G ".whl/*.whl" > /dev/null; then
    "${PYTHON:-python3}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/gpu_check_site .whl/*.whl
    export PYTHONPATH="/tmp/gpu_check_site:$PYTHONPATH"
fi
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
