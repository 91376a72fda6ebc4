#!/usr/bin/env python3
"""Prints the OpenBLAS core this machine runs without OPENBLAS_CORETYPE (e.g. Haswell, SkylakeX,
Prescott, Zen): the kernels the test binaries use natively. scripts/test.sh reruns the numeric
tests under the other kernel family."""
import ctypes
import ctypes.util
import os

os.environ.pop("OPENBLAS_CORETYPE", None)  # before the library is loaded
for name in ("libblas.so.3", ctypes.util.find_library("openblas") or "libopenblas.so.0"):
    try:
        lib = ctypes.CDLL(name)
        lib.openblas_get_corename.restype = ctypes.c_char_p
        print(lib.openblas_get_corename().decode())
        break
    except (OSError, AttributeError):
        continue
else:
    print("unknown")
