"""``python -m dask_redisparam.worker``: the worker process's entry point, as the ``dask-redisparam-worker`` command.

Python runs this file as ``__main__`` and imports every other module of the package under its own name, once.
"""

import sys

from ..cli import worker_main

if __name__ == "__main__":
    worker_main(prog_name="python -m dask_redisparam.worker")
    sys.exit(0)
