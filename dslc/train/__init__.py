"""Training: numpy executor (executor.py), optimisers and schedules (optim.py), data (data.py), loop (loop.py).

`dslc.train(...)` trains a network. Importing a submodule (dslc.train.executor) rebinds the attribute `dslc.train`
from the function in dslc/__init__.py to this package, so the package itself is callable too: both spellings
run dslc.train.loop.train.
"""
import sys as _sys
import types as _types


class _CallablePackage(_types.ModuleType):
    def __call__(self, source, **kwargs):
        from dslc.train.loop import train as _train
        return _train(source, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
