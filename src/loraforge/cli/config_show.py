"""``loraforge config show``: every config key with its type, default and help, so nobody reads config.py.

The help is the attribute docstring under each field (the config's own documentation), read from
the source with ``ast``; a field's ``description`` wins when pydantic has one.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml
from pydantic import BaseModel


@dataclass(frozen=True)
class Key:
    name: str  # section.key
    type: str
    default: Any
    help: str
    value: Any


@cache
def attribute_docstrings(cls: type) -> dict[str, str]:
    """``{field: docstring}`` of the string literal right under each annotated attribute of ``cls``."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # no source (frozen app, REPL class)
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _doc(model: type[BaseModel], name: str) -> str:
    if description := model.model_fields[name].description:
        return description
    for cls in model.__mro__:
        if cls is BaseModel:
            break
        if name in (docs := attribute_docstrings(cls)):
            return docs[name]
    return ""


def type_name(annotation: Any) -> str:
    """``Literal['a', 'b']`` -> ``a | b``; ``str | None`` -> ``str | None``; ``list[str]`` as written."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(type_name(a) for a in args)
    if annotation is type(None):
        return "None"
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(type_name(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(metadata: list) -> str:
    ops = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    found = [f"{sym} {getattr(m, op)}" for m in metadata for op, sym in ops.items() if hasattr(m, op)]
    return f" ({', '.join(found)})" if found else ""


def _sections(annotation: Any) -> list[type[BaseModel]]:
    """The models a field holds: itself, or each model of a union (e.g. one config per method)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]


def config_keys(model: type[BaseModel], value: BaseModel | None = None, prefix: str = "") -> list[Key]:
    """Every leaf key of ``model`` (depth first), with the value it has in ``value`` when given."""
    keys: list[Key] = []
    seen: set[str] = set()
    for name, info in model.model_fields.items():
        current = getattr(value, name, None) if value is not None else None
        if sections := _sections(info.annotation):
            for section in sections:
                inner = current if isinstance(current, section) else None
                keys += [k for k in config_keys(section, inner, f"{prefix}{name}.") if k.name not in seen]
                seen.update(k.name for k in keys)
            continue
        default = "(required)" if info.is_required() else info.get_default(call_default_factory=True)
        keys.append(Key(f"{prefix}{name}", type_name(info.annotation) + _bounds(info.metadata), default,
                        _doc(model, name), current if value is not None else default))
    return keys


def _plain(value: Any) -> Any:
    """Config sections inside lists (``data.tasks`` entries) as the mappings a YAML file holds."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _render(value: Any) -> str:
    return yaml.safe_dump(_plain(value), default_flow_style=True, allow_unicode=True, width=10**6).strip(
    ).removesuffix("\n...").strip()


def show_config(cfg: BaseModel, config: str | None = None, overrides: list[str] | None = None) -> str:
    """The text ``loraforge config show`` prints: ``key = value`` with type, default and help under it."""
    from loraforge.cli.spec import split_config

    config, overrides = split_config(config, overrides or [])
    source = config or "the built-in defaults"
    lines = [f"# {source}" + (f" with {' '.join(overrides)}" if overrides else "") + ": every key as "
             "`key = value`, its type and default, what it does. Set one with `section.key=value` after the "
             "config, or in the YAML file."]
    for key in config_keys(type(cfg), cfg):
        lines.append(f"{key.name} = {_render(key.value)}")
        lines.append(f"    {key.type}, default {_render(key.default)}")
        lines += textwrap.wrap(" ".join(key.help.split()), 96, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)
