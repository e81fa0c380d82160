"""The manager's side of a run: a graph in, results out.

:mod:`~dask_redisparam.manager.graph` (preparing a dask graph), :mod:`~dask_redisparam.manager.options` (one
run's options), :mod:`~dask_redisparam.manager.state` (the run's state), :mod:`~dask_redisparam.manager.loop`
(the loop that talks to the backend), :mod:`~dask_redisparam.manager.lease` (the run's lease),
:mod:`~dask_redisparam.manager.rejections` (refused task messages), :mod:`~dask_redisparam.manager.mapping`
(``map``/``iterate``), :mod:`~dask_redisparam.manager.shuffle` (shuffles across hosts). It never imports
:mod:`dask_redisparam.worker`.
"""
