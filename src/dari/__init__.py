"""dari: a messenger that keeps delivering when a network blocks it."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
