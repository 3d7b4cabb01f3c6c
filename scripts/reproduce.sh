#!/usr/bin/env bash
# Re-make every committed result under paper/ at this (clean) commit: python -m compare.paper --help for the options
# (--list, --only NAME, --quick, --root DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m compare.paper "$@"
