"""Configuration: what a user or an operator sets, validated once.

:mod:`~dask_redisparam.config.settings` (every setting), :mod:`~dask_redisparam.config.resolution` (which Redis
server: arguments, environment, dask config), :mod:`~dask_redisparam.config.address` (a server's address),
:mod:`~dask_redisparam.config.names` (names shared with the layers above), :mod:`~dask_redisparam.config.defaults`
(the packaged ``redisparam.yaml``). It imports only :mod:`dask_redisparam.errors`.
"""
