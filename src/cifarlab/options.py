"""Run options declared once, on their config field: the CLI flag, its help and the short override name follow.

A field declared with `option(...)` carries a `Flag` in its metadata (in litgpt's manner). From it follow:

- the command-line flag of every command that starts runs (`add_flags`, `overrides_from_args`),
- the short name that `cifarlab.train(epochs=5)` and `resolve_config` take (`short_keys`), and
- the TOML key, which is the field's own name in its table (`[train] epochs = 5`).

Adding a run option is one edit: a field declared with `option(...)` (and its check in `__post_init__`).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass
from typing import Any, get_type_hints

_NOT_A_SWITCH = object()  # Flag.const of a flag that takes a value

GROUPS = {  # help sections, in the order `--help` shows them
    "data": "data",
    "train": "training",
    "machine": "machine",
    "output": "output",
    "transfer": "transfer learning (--backbone)",
    "distributed": "distributed (torchrun)",
}


@dataclass(frozen=True)
class Flag:
    """How a config field appears on the command line."""

    help: str
    name: str | None = None  # the flag; None = '--' + the field name with dashes
    metavar: str | None = None
    const: Any = _NOT_A_SWITCH  # a switch that sets the field to this value (e.g. --no-early-stop sets ())
    parse: Callable[[str], Any] | None = None  # text -> value; None = by the field's type (int, float, str)
    short: str | None = None  # the short override name; None = the field's name
    group: str | None = None  # a key of GROUPS; None = the field's config section


def option(default: Any = MISSING, *, default_factory: Any = MISSING, **flag: Any) -> Any:
    """A dataclass field with its command-line flag (see `Flag` for the keywords).

    Example:
        >>> epochs: int = option(30, metavar="N", help="epochs to train (the preset's by default)")
    """
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"flag": Flag(**flag)})


@dataclass(frozen=True)
class RunOption:
    """A config field that has a flag: where it lives (`key`, dotted), its type and its Flag."""

    key: str  # 'epochs' -> 'train.epochs'; top-level fields have no section ('seed')
    field: dataclasses.Field
    hint: Any
    flag: Flag

    @property
    def name(self) -> str:
        """The flag, e.g. '--val-size'."""
        return self.flag.name or "--" + self.field.name.replace("_", "-")

    @property
    def dest(self) -> str:
        """The argparse destination."""
        return self.key.replace(".", "__")

    @property
    def group(self) -> str:
        """Its help section."""
        return self.flag.group or self.key.rpartition(".")[0]

    def add_to(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        """Add this flag to a parser (its default is None: an unset flag never hides the preset's value)."""
        if self.flag.const is not _NOT_A_SWITCH:
            parser.add_argument(self.name, dest=self.dest, action="store_const", const=self.flag.const,
                                default=None, help=self.flag.help)  # fmt: skip
            return
        choices = typing.get_args(self.hint) if typing.get_origin(self.hint) is typing.Literal else None
        parse = self.flag.parse or _parser_of(self.hint)
        metavar = self.flag.metavar or (None if choices else self.field.name.upper())  # not the dotted dest
        parser.add_argument(self.name, dest=self.dest, type=parse, choices=choices, metavar=metavar,
                            default=None, help=self.flag.help)  # fmt: skip


def _parser_of(hint: Any) -> Callable[[str], Any] | None:
    """The text parser of a flag by its field type: int, float or str (`X | None` as X)."""
    options = [arg for arg in typing.get_args(hint) if arg is not type(None)] or [hint]
    if len(options) == 1 and options[0] in (int, float):
        return options[0]
    return None


def run_options(config_class: type) -> list[RunOption]:
    """Every field of a config dataclass (and of its section dataclasses) that has a flag, in declaration order."""
    found = []
    for spec in dataclasses.fields(config_class):
        hint = get_type_hints(config_class)[spec.name]
        if dataclasses.is_dataclass(hint):  # a section: [data], [train], [transfer]
            for inner in dataclasses.fields(hint):
                if "flag" in inner.metadata:
                    inner_hint = get_type_hints(hint)[inner.name]
                    found.append(RunOption(f"{spec.name}.{inner.name}", inner, inner_hint, inner.metadata["flag"]))
        elif "flag" in spec.metadata:
            found.append(RunOption(spec.name, spec, hint, spec.metadata["flag"]))
    return found


def short_keys(config_class: type) -> dict[str, str]:
    """Short override names -> dotted keys: every section field by its own name, and the flags' `short` names.

    Raises:
        ValueError: if two fields would share a short name (a declaration error).
    """
    keys: dict[str, str] = {}
    for spec in dataclasses.fields(config_class):
        hint = get_type_hints(config_class)[spec.name]
        if not dataclasses.is_dataclass(hint):
            continue
        for inner in dataclasses.fields(hint):
            flag = inner.metadata.get("flag")
            for short in {inner.name, flag.short if flag is not None and flag.short else inner.name}:
                if short in keys:
                    raise ValueError(f"config fields {keys[short]} and {spec.name}.{inner.name} share the name {short}")
                keys[short] = f"{spec.name}.{inner.name}"
    return keys


def add_flags(parser: argparse.ArgumentParser, options: Iterable[RunOption], *, grouped: bool = True) -> None:
    """Add the flags of `options` to `parser`, in help sections by group (in GROUPS' order) when `grouped`."""
    options = list(options)
    if not grouped:
        for run_option in options:
            run_option.add_to(parser)
        return
    for group in GROUPS:
        members = [run_option for run_option in options if run_option.group == group]
        if members:
            section = section_of(parser, group)
            for run_option in members:
                run_option.add_to(section)


def section_of(parser: argparse.ArgumentParser, group: str) -> argparse._ArgumentGroup:
    """The parser's help section for `group` (made once)."""
    title = GROUPS[group]
    for existing in parser._action_groups:
        if existing.title == title:
            return existing
    return parser.add_argument_group(title)


def overrides_from_args(args: argparse.Namespace, options: Iterable[RunOption]) -> dict[str, Any]:
    """The dotted config overrides the flags in `args` set (unset flags are left out)."""
    values = {run_option.key: getattr(args, run_option.dest, None) for run_option in options}
    return {key: value for key, value in values.items() if value is not None}


def flag_names(keys: Iterable[str], options: Iterable[RunOption]) -> list[str]:
    """The flags of dotted config keys (for messages such as 'drop --epochs')."""
    by_key = {run_option.key: run_option.name for run_option in options}
    return [by_key.get(key, "--" + key.rpartition(".")[2].replace("_", "-")) for key in keys]


def comma_list(text: str) -> tuple[str, ...] | None:
    """'cat, dog' -> ('cat', 'dog'): a flag's comma-separated names (None when it names none)."""
    return tuple(part.strip() for part in text.split(",") if part.strip()) or None


def count_or_fraction(text: str) -> int | float:
    """'10000' -> 10000 (a count), '0.2' -> 0.2 (a fraction)."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number or a fraction, got {text!r}") from None
