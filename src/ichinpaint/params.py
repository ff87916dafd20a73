"""Stage settings: declared once, as a dataclass, and checked before a stage does any work.

Each stage's params.yaml group is one frozen dataclass whose fields are declared with
`setting(default, help, ...)`: the field's type, default, help text, choices, range
(`Rule`) and the params.yaml key it comes from. From that one declaration
`add_options` makes the stage's command-line options (``--name``; booleans as
``--name/--no-name``, tuples as lists), `from_args` builds the dataclass from the
parsed options, and `rules_of` gives the ranges. tests/test_params.py checks that each
dataclass and its params.yaml group hold the same keys, types and defaults; the library
takes the dataclass and never reads params.yaml.

Each stage module declares ``PARAM_RULES`` (option name -> `Rule`: its settings'
rules plus those of its path and orchestration options). The CLI checks the parsed options against them (and calls the module's optional
``check_args(args)`` for rules that join several options) before ``run``, so a bad value
stops the stage in a second, with one line naming the option, the value and the range,
instead of after the model has run or, worse, silently.

List options (``nargs``) are checked element by element and must not be empty unless
the rule says so. Under DVC an empty list in params.yaml disappears from the command
line (DVC unpacks ``[]`` to nothing), so the CLI treats a list option missing from a
DVC-run command as an empty list, not as "use the default" (see `ichinpaint.cli`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ParamError(ValueError):
    """A setting outside its declared range."""


@dataclass(frozen=True)
class Rule:
    """`check(value)` must hold; `text` completes "must be ..." in the error."""

    check: Callable[[Any], bool]
    text: str
    allow_empty: bool = False


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def at_least(low: float) -> Rule:
    return Rule(lambda v: _number(v) and v >= low, f">= {low}")


def greater_than(low: float) -> Rule:
    return Rule(lambda v: _number(v) and v > low, f"> {low}")


def between(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Rule:
    """``low <= v <= high``, with either end open on request."""

    def check(v: Any) -> bool:
        if not _number(v):
            return False
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        return above and below

    left, right = "(" if low_open else "[", ")" if high_open else "]"
    return Rule(check, f"in {left}{low}, {high}{right}")


def one_of(choices: Iterable[Any]) -> Rule:
    choices = tuple(choices)
    return Rule(lambda v: v in choices, f"one of {list(choices)}")


def any_of(*rules: Rule) -> Rule:
    return Rule(lambda v: any(r.check(v) for r in rules), " or ".join(r.text for r in rules))


def multiple_of(step: int, low: int) -> Rule:
    return Rule(
        lambda v: _number(v) and v >= low and v % step == 0, f"a multiple of {step}, >= {low}"
    )


def maybe_empty(rule: Rule) -> Rule:
    """The same rule for each element of a list that may also be empty."""
    return Rule(rule.check, rule.text, allow_empty=True)


N_JOBS = any_of(one_of([-1]), at_least(1))  # -1: all cores
SEED = between(0, 2**32 - 1)  # numpy's seed range


def check_value(name: str, value: Any, rule: Rule) -> None:
    """ParamError naming ``--name``, the value and the rule when `value` breaks it."""
    if isinstance(value, list | tuple):
        if not value and not rule.allow_empty:
            raise ParamError(f"--{name}: empty list; must hold at least one value {rule.text}")
        bad = [v for v in value if not rule.check(v)]
        if bad:
            raise ParamError(f"--{name} {bad[0]!r}: every value must be {rule.text}")
        return
    if not rule.check(value):
        raise ParamError(f"--{name} {value!r}: must be {rule.text}")


def validate(args: argparse.Namespace, rules: dict[str, Rule]) -> None:
    """Check every option that has a rule; the first violation raises ParamError."""
    for name, rule in rules.items():
        if hasattr(args, name):
            check_value(name, getattr(args, name), rule)


def require(condition: bool, message: str) -> None:
    """For a module's ``check_args``: ParamError with `message` unless `condition`."""
    if not condition:
        raise ParamError(message)


# ---------------------------------------------------------------- declaring settings

OWN_GROUP = None  # `param` of a field read from its stage's own params group, same name
NOT_A_PARAM = ""  # `param` of a command-line-only setting (params.yaml never sets it)


def setting(
    default: Any,
    help: str,
    *,
    choices: Iterable[Any] | None = None,
    rule: Rule | None = None,
    metavar: str | tuple[str, ...] | None = None,
    param: str | None = OWN_GROUP,
    flags: tuple[str, ...] = (),
) -> Any:
    """A settings field with everything its option needs.

    `param`: where params.yaml holds it: `OWN_GROUP` (the stage's group, same key),
    ``"group.key"`` for a value dvc.yaml passes from another group, or `NOT_A_PARAM`.
    `flags`: extra spellings of the option (``--name`` is always one).
    """
    meta = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "rule": rule,
        "metavar": metavar,
        "param": param,
        "flags": flags,
    }
    if isinstance(default, list | dict | set):
        raise TypeError("mutable defaults: declare a tuple")
    return dataclasses.field(default=default, metadata=meta)


def declared_fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """(field, resolved type) of every `setting` field of a settings dataclass."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if "help" in f.metadata]


def _tuple_shape(kind: Any) -> tuple[type, int | str] | None:
    """(element type, nargs) of a ``tuple[X, ...]`` or ``tuple[X, X]`` annotation; else None."""
    if typing.get_origin(kind) is not tuple:
        return None
    args = typing.get_args(kind)
    if len(args) == 2 and args[1] is Ellipsis:
        return args[0], "+"
    return args[0], len(args)


def _scalar(kind: Any) -> type:
    # `Path | None` style annotations are not used; plain types only.
    if isinstance(kind, types.UnionType):
        raise TypeError(f"settings fields take one type, got {kind}")
    return kind


def add_options(parser: argparse.ArgumentParser | Any, cls: type) -> None:
    """One ``--name`` option per field of `cls`, with its default, help and choices."""
    for field, kind in declared_fields(cls):
        meta = field.metadata
        names = (f"--{field.name}", *meta["flags"])
        extra: dict[str, Any] = {"help": meta["help"], "default": field.default}
        if meta["choices"] is not None:
            extra["choices"] = meta["choices"]
        if meta["metavar"] is not None:
            extra["metavar"] = meta["metavar"]
        shape = _tuple_shape(kind)
        if shape is not None:
            element, nargs = shape
            rule = meta["rule"]
            if nargs == "+" and rule is not None and rule.allow_empty:
                nargs = "*"
            extra.update(type=element, nargs=nargs, default=list(field.default))
        elif kind is bool:
            extra["action"] = argparse.BooleanOptionalAction
        else:
            extra["type"] = _scalar(kind)
        parser.add_argument(*names, **extra)


def from_args(cls: type, args: argparse.Namespace, **more: Any) -> Any:
    """The settings `cls` from parsed options (lists become tuples); `more` sets other fields."""
    values = {}
    for field, kind in declared_fields(cls):
        value = getattr(args, field.name)
        values[field.name] = tuple(value) if _tuple_shape(kind) is not None else value
    return cls(**values, **more)


def from_mapping(cls: type, groups: dict[str, dict[str, Any]], group: str, **more: Any) -> Any:
    """The settings `cls` of params `group` from params.yaml's groups (keys absent: defaults).

    For tools that start from what the pipeline ran (the review app); the stages get their
    settings through the command line.
    """
    values = {}
    for field, kind in declared_fields(cls):
        key = param_key(field, group)
        if not key:
            continue
        owner, name = key.split(".", 1)
        if name in (groups.get(owner) or {}):
            value = groups[owner][name]
            values[field.name] = tuple(value) if _tuple_shape(kind) is not None else value
    return cls(**{**values, **more})


def param_key(field: dataclasses.Field, group: str) -> str:
    """``"group.key"`` of the params.yaml value a field comes from ("" = none)."""
    param = field.metadata["param"]
    if param is OWN_GROUP:
        return f"{group}.{field.name}"
    return param


def rules_of(cls: type) -> dict[str, Rule]:
    """The ranges declared on the fields of `cls`, for a stage's ``PARAM_RULES``."""
    return {f.name: f.metadata["rule"] for f, _ in declared_fields(cls) if f.metadata["rule"]}


def path_option(default: str, help: str) -> Any:
    """A command-line-only path setting (a `Path` field)."""
    return setting(Path(default), help, param=NOT_A_PARAM)
