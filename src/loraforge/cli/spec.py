"""How a command is declared, and the one generic way it is run.

A command is a row of the table in ``commands.py``: its path (``("data", "check")``), its flags
(declared once, each with help), and the function it calls. Running it passes the parsed flags to
that function by parameter name, so a flag's ``dest`` *is* the keyword it feeds: nothing is copied
from ``args`` into a call by hand, and a new flag only needs a parameter of the same name.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


class UsageError(Exception):
    """A mistake in how a command was called; the CLI prints it as one line and exits with 2."""


@dataclass(frozen=True)
class Arg:
    """One flag or positional: ``argparse.add_argument(*flags, help=help, **options)``."""

    flags: tuple[str, ...]
    help: str
    options: dict = field(default_factory=dict)
    config_key: str | None = None
    """A shortcut for a config key (``--out`` = ``output.dir``): when given, it is set on the config."""


def arg(*flags: str, help: str, config_key: str | None = None, **options) -> Arg:  # noqa: A002 (argparse's name)
    return Arg(flags, help, options, config_key)


def _status(result: Any) -> int:
    """The default way a result becomes an exit status: None/True -> 0, False -> 1, an int as is."""
    if isinstance(result, bool):
        return 0 if result else 1
    return result if isinstance(result, int) else 0


def show_json(result: Any) -> int:
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def show_text(result: Any) -> int:
    print(result)
    return 0


def show_lines(result: Any) -> int:
    for line in result:
        print(line)
    return 0


ConfigMode = Literal["none", "optional", "explicit"]


@dataclass(frozen=True)
class Command:
    """One row of the command table."""

    path: tuple[str, ...]
    help: str
    run: str | Callable[..., Any]
    """``"module:function"`` (imported only when the command runs, so --help stays fast) or a callable."""
    args: tuple[Arg, ...] = ()
    config: ConfigMode = "none"
    """'optional': takes ``[CONFIG] [section.key=value ...]`` and passes the loaded config as ``cfg``;
    'explicit': the same, but with neither a config nor overrides it needs ``--defaults`` (for the
    commands that start long runs: built-in defaults must be a choice, not an accident)."""
    show: Callable[[Any], int] = _status
    """Prints the function's result and turns it into the exit status."""
    description: str | None = None


def resolve(target: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(target):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def call(fn: Callable[..., Any], values: dict[str, Any], **extra: Any) -> Any:
    """``fn(**values)`` keeping only the keywords ``fn`` takes (all of them when it takes ``**kwargs``)."""
    values = {**values, **extra}
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        values = {k: v for k, v in values.items() if k in params}
    return fn(**values)


# --- config positional ---------------------------------------------------------------------------

CONFIG_ARGS = (
    arg("config", nargs="?", help="YAML config (see configs/); `loraforge config show` lists every key"),
    arg("overrides", nargs="*", metavar="section.key=value", help="override any config key, e.g. train.steps=50"),
)
DEFAULTS_ARG = arg("--defaults", action="store_true",
                   help="run with the built-in defaults when no config is given (see `loraforge config show`)")


def split_config(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """``CONFIG`` may be left out: a first argument with '=' that is no file is an override."""
    overrides = list(overrides or [])
    if config and "=" in config and not Path(config).exists():
        return None, [config, *overrides]
    return config, overrides


def load_command_config(command: Command, values: dict[str, Any]):
    from loraforge.config import load_config

    config, overrides = split_config(values.get("config"), values.get("overrides", []))
    if command.config == "explicit" and config is None and not overrides and not values.get("defaults"):
        name = " ".join(command.path)
        raise UsageError(f"{name} needs a config, e.g. `loraforge {name} configs/demo.yaml` (presets are in "
                         f"configs/); to {name} with the built-in defaults, say so: `loraforge {name} --defaults`")
    cfg = load_config(config, overrides)
    for a in command.args:
        value = values.get(a.options.get("dest") or a.flags[0].lstrip("-").replace("-", "_"))
        if a.config_key and value not in (None, False):
            section, key = a.config_key.split(".")
            setattr(getattr(cfg, section), key, value)
    return cfg


def run_command(command: Command, values: dict[str, Any]) -> int:
    values = {k: v for k, v in values.items() if not k.startswith("_") and k != "cmd"}
    if command.config != "none":
        values["cfg"] = load_command_config(command, values)
    return command.show(call(resolve(command.run), values))


# --- building the parser -------------------------------------------------------------------------


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions/epilogs kept as written; every option's help ends with its default when it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        nothing = default is None or default is False or default == [] or default == argparse.SUPPRESS
        if ("%(default)" in text or nothing or action.nargs == 0
                or not (action.option_strings or action.nargs in ("?", "*"))):
            return text
        return f"{text} (default: %(default)s)"


def add_command(sub: argparse._SubParsersAction, command: Command) -> argparse.ArgumentParser:
    p = sub.add_parser(command.path[-1], help=command.help, description=command.description or command.help,
                       formatter_class=HelpFormatter)
    args = (*CONFIG_ARGS, *command.args) if command.config != "none" else command.args
    if command.config == "explicit":
        args = (*args, DEFAULTS_ARG)
    for a in args:
        p.add_argument(*a.flags, help=a.help, **a.options)
    p.set_defaults(_command=command)
    return p


def build(parser: argparse.ArgumentParser, commands: list[Command], groups: dict[tuple[str, ...], str]) -> None:
    """Add every command under its group; groups (``data``, ``bench``, ...) are created once, on first use."""
    subparsers = {(): parser.add_subparsers(dest="cmd", metavar="COMMAND", required=True)}
    for command in commands:
        for depth in range(1, len(command.path)):
            group = command.path[:depth]
            if group not in subparsers:
                g = subparsers[group[:-1]].add_parser(group[-1], help=groups[group], description=groups[group],
                                                      formatter_class=HelpFormatter)
                subparsers[group] = g.add_subparsers(dest=f"_{'_'.join(group)}_cmd", metavar="COMMAND",
                                                     required=True)
        add_command(subparsers[command.path[:-1]], command)
