#!/usr/bin/env bash
# The Python reference peer's environment: a venv in .cache/pyenv with test/interop/requirements.txt
# (confluent-kafka and its Avro serializer) installed. Idempotent: the venv is created when
# missing, and created afresh when the requirements or the Python changed since it was built;
# otherwise nothing happens. Prints the venv's python on stdout (progress goes to stderr):
#
#   scripts/python-peer.sh                              # CI runs it before the tests
#   "$(scripts/python-peer.sh)" test/interop/produce_avro.py --help
#
# PYTHON names the interpreter to build the venv with (default: python3.11, else python3); it
# must be Python 3.11 or newer.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=.cache/pyenv
requirements=test/interop/requirements.txt
stamp="$venv/.requirements.sha256"

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if command -v python3.11 >/dev/null; then python=python3.11; else python=python3; fi
fi
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "python-peer: $python is missing or older than Python 3.11; set PYTHON to a Python 3.11+" >&2
  exit 1
fi

# What the venv was built from: the pins and the interpreter's version.
want="$(sha256sum "$requirements" | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.version.split()[0])')"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$PWD/$venv/bin/python"
  exit 0
fi

echo "python-peer: creating $venv with $python ($("$python" --version 2>&1))" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
# Every package is pinned in the file; pip still resolves, so a pin that no longer satisfies
# confluent-kafka[avro] (or another pin) fails here rather than at import.
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
"$venv/bin/pip" check --disable-pip-version-check >&2
"$venv/bin/python" -c 'import confluent_kafka.schema_registry.avro' >&2
# Written last: a venv interrupted midway is rebuilt on the next call.
echo "$want" >"$stamp"
echo "python-peer: ready" >&2
echo "$PWD/$venv/bin/python"
