"""`fleet --help` and `fleet <command> --help`: every command and every option says what it is for."""

from __future__ import annotations

import argparse

from fleet.cli import parser


def test_every_command_and_option_has_a_description() -> None:
    """An option listed bare in --help leaves users to guess (what does `fleet monitor --json` print?)."""
    [commands] = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    described = {c.dest: c.help for c in commands._choices_actions}
    assert sorted(described) == sorted(commands.choices) and all(described.values()), described
    bare = [(name, a.option_strings) for name, command in commands.choices.items() for a in command._actions
            if not a.help]
    assert bare == []
