#!/usr/bin/env bash
# Static checks: ruff (lint + format) over the code directories that exist, and strict mypy over the package.
# Run from anywhere: bash ci/lint.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

paths=()
for dir in dask_redisparam tests benchmarks examples notebooks; do
    if [[ -d "$dir" ]]; then
        paths+=("$dir")
    fi
done

echo "+ ruff check ${paths[*]}"
ruff check "${paths[@]}"
echo "+ ruff format --check ${paths[*]}"
ruff format --check "${paths[@]}"
echo "+ mypy dask_redisparam"
mypy dask_redisparam
echo "+ lint-imports (the layers of pyproject.toml's [tool.importlinter])"
lint-imports --no-cache
