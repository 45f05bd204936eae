"""Command-line options declared on config fields: a default, a help sentence and how the command line spells it.

Each run's settings are a dataclass beside the code that uses them (`stlib.gatys.GatysConfig`,
`stlib.train.TrainConfig`, ...). A field declared with `option` carries its help text and its command-line form
in its ``metadata``; `add_options` turns those fields into argparse arguments and `config_from` turns the parsed
arguments back into the dataclass, so a new setting appears on the command line, with its help, without a second
copy (`stlib.cli` uses both). Fields declared with a plain default stay off the command line. An option's limits
(`check`, `choices`) are declared once: the command line applies them while parsing, and `check_options` applies
the same ones to a config built in Python. `option_of` lends one config's option to another with another default
(the training loop's settings to `stlib.distill`), and `accept_former_keywords` lets a config take an earlier
version's keywords. This module is the command line's half of the configs: it imports nothing heavy, so
``python -m stlib --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, Field, field
from typing import Any

__all__ = [
    "CHECKS",
    "RULES",
    "accept_former_keywords",
    "add_options",
    "check_options",
    "config_from",
    "is_option",
    "key_value",
    "layer_weight",
    "nest_settings",
    "option",
    "option_of",
    "parse_type",
    "require",
]

CHECKS = ("positive", "non_negative", "fraction")
"""Value checks the command line applies: > 0, >= 0 (finite), and a number in [0, 1]."""


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    flag: str | Sequence[str] | None = None,
    choices: Sequence[Any] | None = None,
    check: str | None = None,
    metavar: str | None = None,
    group: str | None = None,
    positional: bool = False,
    required: bool = False,
    none: Any = MISSING,
) -> Any:
    """A dataclass field with its command-line description in ``metadata``.

    `flag` overrides the option name (default ``--field-name``; a boolean that defaults to True gets
    ``--field-name`` / ``--no-field-name``, or only the given flag, which turns it off, e.g. ``--quiet`` for
    ``progress``); `check` is one of `CHECKS`; `group` names the help section; `required` makes the command line
    insist on a field that has a default (fields without one always are); `none` is the command-line value that
    stands for None (e.g. 0 for "as large as the file").
    """
    if check is not None and check not in CHECKS:
        raise ValueError(f"check must be one of {', '.join(CHECKS)}, got {check!r}.")
    metadata = {"help": help, "flag": (flag,) if isinstance(flag, str) else flag, "choices": choices}
    metadata |= {"check": check, "metavar": metavar, "group": group, "positional": positional, "required": required}
    if none is not MISSING:
        metadata["none"] = none
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def is_option(f: Field) -> bool:
    """Whether a dataclass field was declared with `option` (and so belongs on the command line)."""
    return bool(f.metadata.get("help"))


def _number(cast: type, what: str, low: float = -math.inf, high: float = math.inf, low_ok: bool = True):
    """An argparse type: `cast(text)` within [low, high] (or (low, high] without `low_ok`), else "expected <what>"."""

    def parse(text: str) -> float:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ((value > low or (low_ok and value == low)) and value <= high and value != math.inf):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _number(int, "a positive integer", low=1)
non_negative_float = _number(float, "a finite number >= 0", low=0)
_TYPES: dict[tuple[type, str | None], Callable[[str], Any]] = {
    (int, None): int,
    (int, "positive"): positive_int,
    (int, "non_negative"): _number(int, "an integer >= 0", low=0),
    (float, None): float,
    (float, "positive"): _number(float, "a number > 0", low=0, low_ok=False),
    (float, "non_negative"): non_negative_float,
    (float, "fraction"): _number(float, "a number between 0 and 1", low=0, high=1),
    (str, None): str,
}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


RULES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "positive_int": ("a positive integer", lambda v: _is_int(v) and v >= 1),
    "non_negative_int": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "positive": ("a positive number", lambda v: _is_real(v) and v > 0),
    "non_negative": ("a finite number >= 0", lambda v: _is_real(v) and v >= 0),
    "fraction": ("a number between 0 and 1", lambda v: _is_real(v) and 0 <= v <= 1),
}
"""The rules `require` checks a config's settings by: (what the message calls it, the test of a value)."""


def require(config: object, rule: str, *names: str, none_ok: bool = False) -> None:
    """Raise ValueError ("Config.name must be <rule>, got <value>.") for the first of `names` outside `rule`.

    The settings are attributes of `config` (a dataclass), `rule` a key of `RULES`; bools are not numbers here,
    and with `none_ok` a setting may be None (e.g. "no limit").
    """
    what, ok = RULES[rule]
    for name in names:
        value = getattr(config, name)
        if not (ok(value) or (none_ok and value is None)):
            what = f"None or {what}" if none_ok else what
            raise ValueError(f"{type(config).__name__}.{name} must be {what}, got {value!r}.")


def _rule(check: str, kind: object) -> str:
    """The `RULES` key of an option's `check` for values of `kind`: integers get the integer rules."""
    return f"{check}_int" if kind is int and f"{check}_int" in RULES else check


def check_options(config: object) -> None:
    """Raise ValueError (one sentence naming the setting) for the first option field of `config` outside its
    declared `check` or `choices`: the limits the command line applies, applied to a config built in Python.

    A field whose type admits None may be None; each value of a tuple or list is checked; nested configs check
    themselves.
    """
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        check, choices, value = f.metadata.get("check"), f.metadata.get("choices"), getattr(config, f.name)
        if (check is None and choices is None) or (value is None and _admits_none(hints[f.name])):
            continue
        name = f"{type(config).__name__}.{f.name}"
        if choices is not None and value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}.")
        if check is not None:
            what, ok = RULES[_rule(check, _kind(hints[f.name])[0])]
            values = value if isinstance(value, (tuple, list)) and value else [value]
            if not all(ok(v) for v in values):
                raise ValueError(f"{name} must be {what}, got {value!r}.")


def _admits_none(hint: object) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def accept_former_keywords(cls: type, translate: Callable[[dict[str, Any]], dict[str, Any]] | dict[str, str]) -> None:
    """Let ``cls(...)`` take the keywords of an earlier version of its config: `translate` maps the keywords given
    to the current ones (a former name to its new one, a flat setting into the nested config that holds it now), or
    is a dict {former name: name} (giving both is a TypeError)."""
    init, renames = cls.__init__, translate if isinstance(translate, dict) else None

    def rename(settings: dict[str, Any]) -> dict[str, Any]:
        for former, name in (renames or {}).items():
            if former in settings and name in settings:
                raise TypeError(f"{cls.__name__} takes {name} or its former name {former}, not both.")
            if former in settings:
                settings[name] = settings.pop(former)
        return settings

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **(rename(kwargs) if renames is not None else translate(kwargs)))

    __init__.__doc__, __init__.__signature__ = init.__doc__, inspect.signature(init)
    cls.__init__ = __init__


def nest_settings(settings: dict[str, Any], name: str, cls: type, flat: dict[str, Any]) -> None:
    """Put an earlier version's `flat` settings of the nested config `settings[name]` (dataclass `cls`) into it: a
    given `cls` instance is changed by them, a given dict of changes is completed by them (its own values win)."""
    given = settings.get(name)
    if isinstance(given, cls):
        settings[name] = dataclasses.replace(given, **flat)
    elif flat or given is not None:
        settings[name] = {**flat, **(given or {})}


def option_of(cls: type, name: str, default: Any = MISSING, **changes: Any) -> Any:
    """Config `cls`'s option `name` (its help, limits and flags: declared once, there) for another config, with
    another `default`; `changes` replace parts of the declaration (e.g. ``help=``, ``flag=``, ``group=``)."""
    metadata = {**cls.__dataclass_fields__[name].metadata, "required": False, **changes}
    if isinstance(metadata.get("flag"), str):
        metadata["flag"] = (metadata["flag"],)
    return field(default=default, metadata=metadata)


def layer_weight(text: str) -> tuple[str, float]:
    """'relu1_1' or 'relu1_1:0.5' -> (name, weight): a style layer with its weight on the command line."""
    name, _, weight = text.partition(":")
    return name, non_negative_float(weight) if weight else 1.0


def key_value(text: str) -> tuple[str, str]:
    """'KEY=VALUE' -> (KEY, VALUE): a metadata entry on the command line (e.g. ``--info dataset=COCO``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def parse_type(kind: type, check: str | None = None) -> Callable[[str], Any]:
    """The argparse type for values of `kind` (int, float, str) under a `CHECKS` entry (None: any value)."""
    return _TYPES[kind, check]


def _kind(hint: object) -> tuple[object, object | None]:
    """(value type, container type or None) of a field's type hint: `int | tuple[int, ...]` -> (int, tuple)."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]
    for each in options:
        if typing.get_origin(each) in (tuple, list, dict):
            return (typing.get_args(each) or (str,))[0], typing.get_origin(each)
    return options[0], None


def _default_text(default: object) -> str:
    if default is None or isinstance(default, bool):
        return ""
    if isinstance(default, dict):
        default = [k if w == 1 else f"{k}:{w:g}" for k, w in default.items()]
    if isinstance(default, (tuple, list)):
        default = " ".join(str(v) for v in default)
    return f" (default: {default})".replace("%", "%%")


def _nested(f: Field, hint: object) -> type | None:
    """The config dataclass a field nests (its type, or ``metadata["nested"]``), or None."""
    nested = f.metadata.get("nested", hint)
    return nested if isinstance(nested, type) and dataclasses.is_dataclass(nested) else None


def add_options(
    parser: argparse.ArgumentParser,
    cls: type,
    groups: dict[str, Any] | None = None,
    group: str | None = None,
    partial: bool = False,
) -> None:
    """One argument per `option` field of dataclass `cls` (and of nested config dataclasses), in help `groups`.

    A nested dataclass field's ``metadata["group"]`` is the default group of its fields (e.g. "network"); with
    ``metadata["partial"]`` its options default to None (not given) and `config_from` passes on only the given
    ones, as a dict: the outer config chooses the defaults of the rest (e.g. by task).
    """
    groups = {} if groups is None else groups
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta, hint = f.metadata, hints[f.name]
        nested = _nested(f, hint)
        if nested is not None:
            add_options(parser, nested, groups, meta.get("group", group), partial=bool(meta.get("partial")))
            continue
        if not meta.get("help"):
            continue
        name = meta["group"] or group
        target = (
            parser if name is None else groups.get(name) or groups.setdefault(name, parser.add_argument_group(name))
        )
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        kind, container = _kind(hint)
        help_ = meta["help"] + (_default_text(default) if has_default and not partial else "")
        if partial:
            default = None  # not given: the outer config's choice
        if meta["positional"]:
            target.add_argument(f.name, metavar=meta["metavar"], help=help_)
            continue
        flags = meta["flag"] or ("--" + f.name.replace("_", "-"),)
        if kind is bool and (partial or (default and not meta["flag"])):  # --x / --no-x
            default = None if partial else default  # partial: the outer config's choice may be either
            help_ += "" if partial else " (default: on)"
            target.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_)
            continue
        if kind is bool:
            target.add_argument(*flags, dest=f.name, action="store_false" if default else "store_true", help=help_)
            continue
        target.add_argument(
            *flags, dest=f.name, type=layer_weight if container is dict else _TYPES[kind, meta["check"]],
            nargs="+" if container else None, choices=meta["choices"], help=help_,
            metavar=meta["metavar"] or ("N" if kind is int and not meta["choices"] else None),
            **({"default": default, "required": meta["required"]} if has_default else {"required": True}),
        )  # fmt: skip


def config_from(cls: type, args: argparse.Namespace, **given: Any) -> Any:
    """An instance of dataclass `cls` from the parsed `args` of its option fields and the `given` values.

    Several values become a tuple (a dict for ``LAYER[:W]`` lists), one value of an ``int | tuple`` field stays
    an int, and an option's `none` value becomes None; fields that are not options keep their defaults.
    """
    hints, values = typing.get_type_hints(cls), dict(given)
    for f in dataclasses.fields(cls):
        if f.name in values:
            continue
        hint, nested = hints[f.name], _nested(f, hints[f.name])
        if nested is not None and f.metadata.get("partial"):
            built = {g.name: getattr(args, g.name) for g in dataclasses.fields(nested) if is_option(g)}
            values[f.name] = {k: v for k, v in built.items() if v is not None}  # only the given options
        elif nested is not None:
            values[f.name] = config_from(nested, args)
        elif f.metadata.get("help"):
            value, (_, container) = getattr(args, f.name), _kind(hint)
            if "none" in f.metadata and value == f.metadata["none"]:
                value = None
            elif isinstance(value, list):
                union = typing.get_origin(hint) in (typing.Union, types.UnionType)
                scalar = union and any(
                    typing.get_origin(a) is None and a is not type(None) for a in typing.get_args(hint)
                )
                value = value[0] if scalar and len(value) == 1 else container(value)
            values[f.name] = value
    return cls(**values)
