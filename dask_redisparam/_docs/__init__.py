"""Documentation tools: the configuration reference built from the code.

The documentation build (``docs/hooks/``) and the tests import these modules; the package itself never does, so
``import dask_redisparam`` does not load them (nor click's introspection they use).
"""
