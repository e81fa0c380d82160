"""What travels through Redis: records and their codecs, signatures, pickling, large values in parts.

:mod:`~dask_redisparam.wire.protocol` (task messages, completion records, notices),
:mod:`~dask_redisparam.wire.serialize` (pickling of tasks, results and exceptions),
:mod:`~dask_redisparam.wire.signing` (HMAC signatures), :mod:`~dask_redisparam.wire.bulk` (values in parts).
No I/O: it imports only :mod:`dask_redisparam.config` and :mod:`dask_redisparam.errors`.
"""
