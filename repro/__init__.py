"""repro: rebuild model weights bit for bit from their source.

Training data is a model's source code, the training setup its compiler and the
weights its bytecode. repro hashes the first two, pins the third's environment, and
writes a lockfile that lets anyone rebuild the same bytes.
"""

__version__ = "0.2.0"
