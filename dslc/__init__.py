"""dslc: a compiler for neural networks written as text."""
__version__ = "0.1.0"


def load(path, **kwargs):
    """Parse, elaborate and check a .net file: see dslc.api.load."""
    from dslc.api import load as _load
    return _load(path, **kwargs)


def train(source, **kwargs):
    """Train a network (a .net path, a Program or a graph) with the numpy executor: see dslc.train.loop.train."""
    from dslc.train.loop import train as _train
    return _train(source, **kwargs)
