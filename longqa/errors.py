"""The error types the CLI turns into one-line messages and documented exit codes (cli.md), and the one way
user input is quoted in a message."""

from __future__ import annotations

import os

EXIT_FAILURE = 1  # runtime failure: the input was fine but we could not finish
EXIT_USAGE = 2  # bad usage or bad input
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C): 128 + 2
EXIT_TERMINATED = 143  # SIGTERM: 128 + 15


class LongQAError(Exception):
    """A failure we can explain in one line. exit_code 2: bad usage or input; 1: runtime failure."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InputError(LongQAError):
    """Bad input: missing file, empty text, not a state file, wrong model... (exit 2)."""


class StateError(InputError):
    """A state file that is not ours, is damaged, or belongs to another model (exit 2)."""


class RuntimeFailure(LongQAError):
    """The input was fine but we could not finish: unreadable file, disk full, out of memory (exit 1)."""

    exit_code = EXIT_FAILURE


class Stop(BaseException):
    """A signal that ends the run (SIGINT, SIGTERM). A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way (a loader that turns any failure into "cannot load") can swallow it."""

    def __init__(self, signum: int, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.signum, self.exit_code, self.message = signum, exit_code, message


def show(text: str | os.PathLike, limit: int = 60) -> str:
    """User input (a question, a path) as a message quotes it: on one line, quoted, at most `limit`
    characters of it, control characters and bytes that are not UTF-8 escaped (printable(), as output does)."""
    s = printable(os.fspath(text))
    if len(s) > limit:
        s = s[:limit] + f"... ({len(s):,} characters)"
    return "'" + s + "'"


def printable(name: str) -> str:
    """A string (a file name, from the OS with its undecodable bytes as surrogates) as valid, one-line UTF-8
    text: unchanged when it already is; else with undecodable bytes as \\xNN and control characters as \\n,
    \\t, \\r or \\xNN, and backslashes doubled, as `ls -b` shows names."""
    if name.isprintable() and not _has_surrogates(name):
        return name
    out = []
    for ch in name:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # an undecodable byte
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
        elif 0xD800 <= o <= 0xDFFF or (not ch.isprintable() and ch != " "):
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
        else:
            out.append(ch)
    return "".join(out)


def _has_surrogates(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def valid_text(s: str) -> str:
    """s as valid Unicode (it may hold surrogates: bytes of argv or a file that were not UTF-8), for JSON
    and messages: each undecodable byte becomes U+FFFD."""
    if not _has_surrogates(s):
        return s
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")
