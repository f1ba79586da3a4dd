"""gaia-p2p: a coordinator-free network of gradient-free optimisation islands."""

__version__ = "0.1.0"
