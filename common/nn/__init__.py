"""The numeric core: a neural network in NumPy alone, the code a learner came to read.

Start with ``reference``: the textbook, every formula as plain NumPy beside ``docs/math.md``.
Then the fast forms, one module per idea, each importing only NumPy, the standard library and
this package, each tested equal to its reference:

* ``layers``: ``Dense``, ``ReLU``, ``Tanh``, ``Sigmoid``, ``Dropout``, forward and backward;
* ``conv``: ``Conv2D``, ``MaxPool2D``, ``Flatten``, ``Reshape`` for images ``(B, H, W, C)``;
* ``loss``: softmax fused with cross-entropy, and its gradient;
* ``optimizers``: gradient descent, momentum, RMSprop, Adam (and AdamW);
* ``architecture``: a network as plain data, layer sizes or a list of layer strings;
* ``init``: He, Xavier and fixed-scale initialisation;
* ``network``: ``Network``, a stack of layers whose parameters share one buffer;
* ``schedules``: learning-rate schedules;
* ``augment``: random shifts of training digits;
* ``train``: the training loop (batches, history, divergence check);
* ``metrics``: accuracy, confusion matrix, precision / recall / F1;
* ``gradcheck``: finite differences, to check every backward pass;
* ``errors``: the errors a user can fix;
* ``parallel``: the speed machinery behind one name: element-wise work split over threads.

``textbook`` turns the reference functions into layers and an optimizer, so a network can also
train on the plain forms.
"""
