"""Loaded by every pytest run in this repository: the hamlib tests and nbval over book/ alike.

Kernels that nbval starts inherit this environment, so the stored outputs are compared under the
same conditions they were produced in by `make refresh`, however pytest was invoked.
"""

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars print timings: never compare them
os.environ.setdefault("HAMLIB_STATIC", "1")  # hamlib.plotting.explore: static figures, no widgets
os.environ.setdefault("PYTHONHASHSEED", "0")
