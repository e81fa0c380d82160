"""Tools that read the code to write about it: the configuration reference and the generated source.

:mod:`~dask_redisparam._docs.reference` builds the configuration reference for the documentation build
(``docs/hooks/``), :mod:`~dask_redisparam._docs.figures` draws its figures from a real run at build time;
:mod:`~dask_redisparam._docs.codegen` writes the source that the settings table drives. The
docs build and the tests import them; the package itself never does, so ``import dask_redisparam`` does not load
them (nor click's introspection they use).
"""
