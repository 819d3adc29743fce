"""What every script of the suite shares.

``common.nn`` is the neural network itself: the numeric core, on NumPy alone. Everything else
here is support around it: the MNIST files (``idx``, ``fetch``, ``data``), the protocol every
stage runs under (``protocol``) and the stage scripts' command line and outputs (``runner``),
saving and loading (``serialize``), figures (``plots``), predicting your own digit (``predict``),
the experiments' run cache and discovery of the stages (``runs``, ``stages``), provenance
(``environment``), the one BLAS setting the scripts make (``blas``), and small helpers (``cli``,
``files``, ``paths``, ``report``). Importing any of it changes nothing outside it.
"""
