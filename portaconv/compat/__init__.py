"""Other courses' APIs, built on portaconv's layers.

portaconv's own layers follow the handout's names with PyTorch's semantics. Where a course
API means something else by the same words (the handout's bonus ``BatchNorm2d(C, alpha)``,
the CS189 ``neural_networks`` package's NHWC layers with dict ``parameters``), it lives here,
one subpackage a course, each a thin layer over portaconv's layers rather than a second
implementation:

``portaconv.compat.hw2p1``  the MyTorch HW2P1 handout's bonus layers
``portaconv.compat.cs189``  the CS189 homework's ``neural_networks`` package
"""
