"""The skeleton the three command lines share: verbs dispatched through ``func``, one mapping of
errors to a one-line message and an exit code, and the option types they have in common.

``facecloak``, ``facecloak-export`` and ``facecloak-server`` all end in ``run_command``: an expected
failure (``FaceCloakError``) prints ``PROG: error [REASON]: message`` and exits with the error's
documented code; an interrupt exits 130; nothing else is caught (a bug keeps its traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .errors import FaceCloakError

INTERRUPTED = 130  # the shell's code for SIGINT


def run_command(prog: str, work: Callable[[], int]) -> int:
    """Run ``work`` and turn an expected failure into one line on stderr plus its exit code."""
    try:
        return int(work() or 0)
    except FaceCloakError as exc:
        print(f"{prog}: error [{exc.reason}]: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED


def comma_list(text: str) -> tuple[str, ...]:
    """``a,b,c`` -> ('a', 'b', 'c'): at least one name, no repeats (argparse type)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("give at least one name")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a name is repeated in {text!r}")
    return names
