"""Loaded by every pytest run in this repository: the hamlib tests and nbval over book/ alike.

Kernels that nbval starts inherit this environment, so the stored outputs are compared under the
same conditions they were produced in by `make refresh`, however pytest was invoked. The settings
are defined once, in tools/execenv.py.
"""

from tools import execenv

execenv.apply()
