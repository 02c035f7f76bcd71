#!/usr/bin/env bash
# `make install`, before anything else: is $PYTHON good enough to build the
# virtualenv, and is an existing .venv one to keep? A .venv made by another
# Python, by one too old, or left half-installed by a failed run (no stamp) is
# removed, so re-running with PYTHON=... fixes a mistake instead of repeating it.
#   PYTHON=python3.11 VENV=.venv scripts/check_python.sh
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
NEED=3.11

version_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
too_old() { [ "$(printf '%s\n%s\n' "$NEED" "$1" | sort -V | head -n 1)" != "$NEED" ]; }

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "make: $PYTHON not found; this project needs Python $NEED or newer: install it, or name one with make ... PYTHON=python3.12" >&2
  exit 1
fi
version=$(version_of "$PYTHON") || version=unknown
if [ "$version" = unknown ] || too_old "$version"; then
  echo "make: $PYTHON is Python $version; this project needs $NEED or newer: make ... PYTHON=python3.11 (or newer)" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "make: $PYTHON has no venv module; install it (Debian/Ubuntu: apt install python$version-venv)" >&2
  exit 1
fi

# Which interpreter made the venv: the resolved path of $PYTHON.
wanted=$("$PYTHON" -c 'import os, sys; print(os.path.realpath(sys.executable))')
if [ -d "$VENV" ]; then
  reason=""
  made_by=$(cat "$VENV/.made-by" 2>/dev/null || true)
  venv_version=$(version_of "$VENV/bin/python") || venv_version=""
  if [ -z "$venv_version" ] || too_old "$venv_version"; then
    reason="it has Python ${venv_version:-none}"
  elif [ -n "$made_by" ] && [ "$made_by" != "$wanted" ]; then
    reason="it was made by $made_by, not $wanted"
  elif [ ! -f "$VENV/.installed" ]; then
    reason="an earlier install did not finish"
  fi
  if [ -n "$reason" ]; then
    echo "make: rebuilding $VENV ($reason)." >&2
    rm -rf "$VENV"
  fi
fi
if [ ! -d "$VENV" ]; then
  "$PYTHON" -m venv "$VENV"
  echo "$wanted" > "$VENV/.made-by"
fi
