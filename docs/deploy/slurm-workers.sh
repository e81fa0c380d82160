#!/usr/bin/env bash
# dask-redisparam workers as a Slurm job array: each array task runs one worker daemon with one worker process per
# CPU it was given, serving job $REDISPARAM_JOBNAME on the Redis server of $REDISPARAM_HOST (or $REDISPARAM_URL).
#
#   sbatch --export=ALL,REDISPARAM_JOBNAME=demo,REDISPARAM_HOST=redis.example slurm-workers.sh
#   sbatch --array=0-31 ... slurm-workers.sh --max-tasks 10000   # extra arguments go to the worker
#
# The password is read from a file only you can read (chmod 600), never from the command line:
#   REDISPARAM_PASSWORD_FILE (default ~/.config/dask-redisparam/password).
#
#SBATCH --job-name=redisparam-workers
#SBATCH --array=0-3
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=4
#SBATCH --mem-per-cpu=2G
#SBATCH --time=04:00:00
#SBATCH --signal=B:TERM@300
#SBATCH --output=redisparam-worker-%A_%a.log
# --signal=B:TERM@300: five minutes before the time limit, Slurm sends SIGTERM to this script, which by then *is*
# the worker daemon (exec below): its workers stop warm, finishing their current messages.
set -euo pipefail

: "${REDISPARAM_JOBNAME:?set REDISPARAM_JOBNAME (sbatch --export=ALL,REDISPARAM_JOBNAME=...)}"
if [[ -z "${REDISPARAM_URL:-}" && -z "${REDISPARAM_HOST:-}" ]]; then
    echo "set REDISPARAM_HOST (and REDISPARAM_PORT) or REDISPARAM_URL" >&2
    exit 2
fi

password_file="${REDISPARAM_PASSWORD_FILE:-$HOME/.config/dask-redisparam/password}"
if [[ -z "${REDISPARAM_PASSWORD:-}" && -r "$password_file" ]]; then
    REDISPARAM_PASSWORD="$(<"$password_file")"
    export REDISPARAM_PASSWORD
fi

# A Python environment with dask-redisparam and your tasks' libraries, e.g. a venv on a shared file system.
if [[ -n "${REDISPARAM_VENV:-}" ]]; then
    # shellcheck disable=SC1091
    source "$REDISPARAM_VENV/bin/activate"
fi

# One worker id per array task: readable in `dask-redisparam status`, unique across the array.
export REDISPARAM_ID="slurm-${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-local}}-${SLURM_ARRAY_TASK_ID:-0}"

exec dask-redisparam-worker --nworkers "${SLURM_CPUS_PER_TASK:-1}" "$@"
