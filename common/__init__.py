"""The shared NumPy core of the suite: data, network, loss, optimizers, training, metrics, plots."""
