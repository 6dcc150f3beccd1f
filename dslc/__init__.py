"""dslc: a compiler for neural networks written as text."""
__version__ = "0.1.0"


def load(path, **kwargs):
    """Parse, elaborate and check a .net file: see dslc.api.load."""
    from dslc.api import load as _load
    return _load(path, **kwargs)
