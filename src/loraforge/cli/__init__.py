"""The ``loraforge`` command: a table of commands (``commands.py``), each a call into the Python API.

Anything the CLI does can be done from Python. Heavy imports (torch, transformers) happen only
when a command runs, so ``loraforge --help`` and ``loraforge deploy`` stay fast. User errors
(a bad config, data file, path or flag) end as one line on stderr and exit status 2; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from loraforge.cli.spec import HelpFormatter, UsageError, build, run_command

DESCRIPTION = """\
loraforge fine-tunes small language models with LoRA and other parameter-efficient methods on
your data, evaluates them before and after, and exports, serves or deploys the result."""

EPILOG = """\
examples:
  loraforge train configs/demo.yaml                      fine-tune Gemma 3 270M on Kubernetes docs en->zh
  loraforge translate --adapter runs/demo "A Pod is the smallest deployable unit."
  loraforge eval configs/demo.yaml --adapter runs/demo   score the adapter on the test split
  loraforge config show configs/demo.yaml                every config key: type, default, value, help

`loraforge COMMAND --help` lists a command's options."""


def build_parser() -> argparse.ArgumentParser:
    from loraforge.cli.commands import GROUPS, commands

    parser = argparse.ArgumentParser(prog="loraforge", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    build(parser, commands(), GROUPS)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("loraforge")
    except PackageNotFoundError:
        return "unknown"


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the user asked for something that cannot be done, as said in their message."""
    from loraforge.config import ConfigError
    from loraforge.data.formats import DataError

    return (ConfigError, DataError, UsageError, FileExistsError, FileNotFoundError, IsADirectoryError,
            NotADirectoryError, PermissionError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    errors = user_errors()
    try:
        return run_command(args._command, vars(args))
    except errors as e:
        print(f"loraforge: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `loraforge ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt as e:  # TrainingInterrupted says where its checkpoint is
        print(f"loraforge: {e or 'interrupted'}", file=sys.stderr)
        return 130


__all__ = ["UsageError", "build_parser", "main"]
