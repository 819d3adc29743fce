"""What every script of the suite shares.

``common.nn`` is the neural network itself: the numeric core, on NumPy alone. Everything else
here is support around it: the MNIST files (``idx``, ``fetch``, ``data``), the protocol every
stage runs under (``protocol``) and the stage scripts' command line and outputs (``runner``),
saving and loading (``serialize``), figures (``plots``), predicting your own digit (``predict``),
the experiments' run cache and discovery of the stages (``runs``, ``stages``), provenance
(``environment``), and small helpers (``cli``, ``files``, ``paths``, ``report``).
"""
import os as _os
import sys as _sys

# NumPy's BLAS (OpenBLAS) keeps its worker threads spinning for 2**28 CPU cycles (about 0.1 s)
# after every matrix product, holding the other cores just when the element-wise work that
# follows wants them (common.nn.parallel): with them spinning, splitting that work over threads
# gained nothing. After 2**20 cycles (about 0.4 ms) they rest instead. Shorter made the small
# perceptron slower (its threads then fall asleep between steps and must be woken), longer gave
# the convolutional network's element-wise work less of the cores. OpenBLAS reads the setting
# once, when NumPy is first imported, so it applies only when ``common`` comes first; a value
# already in the environment is kept.
if "numpy" not in _sys.modules:
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")
