#!/bin/bash
# Runs python_client_test.py with Debian's /usr/bin/python3 (it has grpcio and protobuf) and the
# generated kiln.v1 stubs plus kiln_client on PYTHONPATH.
set -euo pipefail
root="${TEST_SRCDIR:-.}/kiln"
export PYTHONPATH="$root/client/python${PYTHONPATH:+:$PYTHONPATH}"
exec /usr/bin/python3 "$root/tests/integration/python_client_test.py"
