"""The `longqa` program's entry point. It installs the signal handlers before it imports anything slow, so
that Ctrl-C or SIGTERM at any moment ends the run with one line and the documented exit code (130, 143),
never a traceback from the middle of an import."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from longqa.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, Stop

received: Stop | None = None  # the first stop signal of this run, whatever became of its exception


def _stop(signum: int, frame: object) -> None:
    """Raise Stop, and remember it: a library may swallow or mangle the exception (a signal in the middle of
    numpy's import, under torch's, surfaced later as 'ImportError: cannot load module more than once per
    process'); main() then still ends the run with this signal's line and exit code."""
    global received
    stop = Stop(signum, EXIT_INTERRUPTED, "interrupted") if signum == signal.SIGINT else Stop(signum, EXIT_TERMINATED, "terminated")
    if received is None:
        received = stop
    raise stop


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM raise Stop (in the main thread). A signal the process was started ignoring
    (a background job's SIGINT) stays ignored, as every Unix program does."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _stop)


def entry() -> int:
    """Run the command, then ignore Ctrl-C and SIGTERM while the interpreter shuts down. By then the
    command has finished (a state is saved whole or not at all); a signal landing in the shutdown would
    otherwise print a traceback from an exit handler or end the process as killed."""
    install_signal_handlers()
    try:
        from longqa.cli import main

        code = main()
    except Stop as stop:  # during the imports, before main() could catch it
        print(f"longqa: {stop.message}", file=sys.stderr)
        code = stop.exit_code
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return code


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait while a file is written and renamed (a fraction of a second): an interrupt
    lands before (the temporary file removed) or after (the new file in place), never in between;
    and a line of answers is written whole or not at all."""
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    except (ValueError, OSError):  # not on this platform / thread
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
