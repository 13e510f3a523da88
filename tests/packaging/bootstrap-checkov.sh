#!/usr/bin/env bash
# Creates the checkov virtualenv (.venv-checkov at the repository root), apart from .venv:
# checkov pins dozens of packages (boto3, networkx, pydantic, ...) that must not meet the
# project's own dependencies. Idempotent: a second run only checks the version.
# Used by tests/packaging/test_checkov.py; scripts/bootstrap.sh may call it ahead of time.
set -euo pipefail
cd "$(dirname "$0")/../.."

CHECKOV_VERSION=3.3.30
VENV=.venv-checkov
PYTHON=${PYTHON:-python3}

STAMP="$VENV/.installed-checkov-$CHECKOV_VERSION"
if [ -x "$VENV/bin/checkov" ] && [ -f "$STAMP" ]; then
  exit 0
fi
echo "bootstrap-checkov: installing checkov $CHECKOV_VERSION into $VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip >/dev/null
"$VENV/bin/pip" install -q "checkov==$CHECKOV_VERSION"
"$VENV/bin/checkov" --version >/dev/null   # fails here, not in a test, if it cannot start
rm -f "$VENV"/.installed-checkov-*
touch "$STAMP"
