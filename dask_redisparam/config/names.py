"""Names that the configuration shares with the layers above it.

* the environment variables of the shared secret (read by :class:`~dask_redisparam.config.settings.Settings`,
  which only notes that one is set, and by :mod:`dask_redisparam.wire.signing`, which signs with it);
* the default job name of the durable local mode, the same in every process (a rerun finds the runs before it);
* the rule a job name follows: it becomes part of every Redis key of the job
  (:mod:`dask_redisparam.backend.keys`), inside the hash-tag braces and between ``:`` separators, and must not
  match more than itself in a ``SCAN MATCH`` pattern.
"""

from __future__ import annotations

__all__ = ["DURABLE_JOBNAME", "SECRET_ENV", "SECRET_FILE_ENV", "validate_name"]

SECRET_ENV = "REDISPARAM_SECRET"
"""The shared secret: ``<secret>``, or ``<id>=<secret>,<id>=<secret>`` for several keys (the first signs)."""
SECRET_FILE_ENV = "REDISPARAM_SECRET_FILE"
"""A file holding the secret in the same format (keep it mode 0600)."""

DURABLE_JOBNAME = "durable"
"""The default ``jobname`` with ``durable=True``."""

_FORBIDDEN = set("{}*?[]: \t\r\n")


def validate_name(name: str, what: str) -> str:
    """Return ``name`` if it may appear in a key, else raise ``ValueError`` naming ``what``.

    Examples
    --------
    >>> validate_name("job-1", "jobname")
    'job-1'
    >>> validate_name("a:b", "jobname")
    Traceback (most recent call last):
    ...
    ValueError: jobname 'a:b' must be a non-empty string without any of '*:?[]{}' or white space
    """
    if not isinstance(name, str) or not name or any(c in _FORBIDDEN for c in name) or len(name) > 200:
        raise ValueError(f"{what} {name!r} must be a non-empty string without any of '*:?[]{{}}' or white space")
    return name
