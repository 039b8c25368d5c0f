"""The "did you mean" of a mistyped command-line flag, for the server's and `fleet`'s one-line argument errors."""

from __future__ import annotations

import argparse
import difflib


def flag_hint(parser: argparse.ArgumentParser, word: str) -> str:
    """``; did you mean --a or --b?`` for ``word`` (a ``--flag=value`` matched by its flag) among ``parser``'s
    options, or "" when none is close."""
    options = [option for action in parser._actions for option in action.option_strings]
    close = difflib.get_close_matches(word.split("=")[0], options, n=2)
    return f"; did you mean {' or '.join(close)}?" if close else ""
