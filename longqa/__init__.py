"""longqa: answer questions about texts far longer than any context window, with an ARMT."""

__version__ = "0.1.0"
