"""The OpenBLAS library that numpy's wheel ships (numpy.libs/), opened with ctypes: its thread-count controls
(dslc/train/parallel.py) and its CBLAS sgemm (dslc/kernels/lane_kernels.py) are not reachable through numpy."""
from __future__ import annotations

import ctypes
import glob
import os
from functools import lru_cache


@lru_cache(maxsize=1)
def libraries() -> tuple[ctypes.CDLL, ...]:
    """Every OpenBLAS shared library next to numpy that opens (none for a numpy built against another BLAS)."""
    import numpy as np
    libdir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    libs = []
    for path in sorted(glob.glob(os.path.join(libdir, "*openblas*.so*"))):
        try:
            libs.append(ctypes.CDLL(path))
        except OSError:
            continue
    return tuple(libs)
