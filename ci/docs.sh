#!/usr/bin/env bash
# Build the documentation site with `mkdocs build --strict` (any warning fails): broken links or anchors, a
# missing page or snippet, a docstring mkdocstrings cannot render, a generated table that cannot be built.
# The site goes to build/site/ (git-ignored; or the directory given as the first argument). Run from anywhere: bash ci/docs.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export NO_MKDOCS_2_WARNING=1  # Material's notice about MkDocs 2.0 is not a warning about this site
site_dir="${1:-build/site}"
echo "+ mkdocs build --strict --site-dir $site_dir"
python -m mkdocs build --strict --site-dir "$site_dir"
