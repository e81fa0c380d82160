#!/usr/bin/env bash
# The whole suite: install with the test extras, lint, then pytest over the tests and the package's doctests.
# Extra arguments go to pytest. Without a test path among them the whole suite runs (bash ci/test.sh -x);
# with one, only that runs (bash ci/test.sh -x -q tests/test_settings.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PIP_ROOT_USER_ACTION="${PIP_ROOT_USER_ACTION:-ignore}"  # CI runs as root
python -m pip install -q -e ".[test]"
bash ci/lint.sh

targets=(dask_redisparam tests)
for arg in "$@"; do
    if [[ "$arg" != -* && -e "${arg%%::*}" ]]; then  # a file, directory or node id was given: run just that
        targets=()
        break
    fi
done
python -m pytest -p no:cacheprovider --doctest-modules "${targets[@]}" "$@"
