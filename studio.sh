#!/usr/bin/env bash
# Set up (idempotently) and then open the app or run the tests.
#   ./studio.sh app [run.py arguments]   set up, then open the studio on the simulated rig
#   ./studio.sh test [pytest arguments]  set up, then run the test suite
#   ./studio.sh setup                    only set up
# Set-up: the apt packages the app needs (installed when run as root, else named for you),
# a virtual environment in .venv, PyTorch, then the project's dependencies from pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(
  libegl1 libegl-mesa0 libgl1   # MuJoCo offscreen rendering through EGL (Mesa's llvmpipe without a GPU)
  libosmesa6                    # MuJoCo's software-rendering fallback when EGL is unavailable
  libusb-1.0-0                  # pyrealsense2 talks to RealSense cameras over libusb
  libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1
  libxcb-image0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-randr0
  libfontconfig1 libdbus-1-3    # Qt's X11 (xcb) platform plugin, for a real window
  xvfb xauth                    # a virtual screen, for window tests and screenshots without a monitor
)

missing_apt() {
  local p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

setup_system() {
  command -v dpkg-query >/dev/null || { echo "Not a Debian/Ubuntu system: install the equivalents of: ${APT_PACKAGES[*]}"; return 0; }
  local missing
  missing=$(missing_apt | tr '\n' ' ')
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" = 0 ]; then
    echo "Installing system packages: $missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "These system packages are missing: $missing"
    echo "Ask an administrator to run: sudo apt-get install $missing"
    exit 1
  fi
}

setup_python() {
  local py=${PYTHON:-python3}
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "Python 3.10 or newer is needed (found $("$py" --version))."; exit 1; }
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  local stamp=.venv/.studio-installed want
  want=$(cat pyproject.toml studio.sh | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  .venv/bin/python -m pip install -q --upgrade pip
  # PyTorch first and pinned: pyproject leaves torch open for lab machines with CUDA, and an open
  # requirement would otherwise pull a multi-GB CUDA build here. On this project's build machines
  # torch==2.13.0 resolves to a local CPU wheel; on a lab machine it is the regular PyPI build.
  .venv/bin/python -c 'import torch' 2>/dev/null || .venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
  .venv/bin/python -m pip install -q ".[test]"
  echo "$want" > "$stamp"
}

cmd=${1:-app}
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup_system; setup_python ;;
  app)   setup_system; setup_python; exec .venv/bin/python run.py "$@" ;;
  test)  setup_system; setup_python
         export MUJOCO_GL=${MUJOCO_GL:-egl} QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen}
         exec .venv/bin/python -m pytest "$@" ;;
  *) echo "usage: ./studio.sh [app|test|setup] [arguments]"; exit 2 ;;
esac
