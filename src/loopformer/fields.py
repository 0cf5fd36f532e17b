"""DictConfig: validation and dict conversion shared by the frozen config dataclasses."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Literal


class DictConfig:
    """replace / to_dict / from_dict for a frozen config dataclass; from_dict names any
    unknown field; check_types rejects a value of the wrong type naming the field (and makes
    an int given for a float field a float)."""

    def check_types(self) -> None:
        """Every field against its annotation: an int field takes an int (not a bool, float
        or string), a float field a finite int or float, a bool field a bool, a Literal one
        of its values, an optional field also None; tuples and dicts element by element."""
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not _fits(value, hints[field.name]):
                raise ValueError(f"{type(self).__name__}.{field.name} must be "
                                 f"{_describe(hints[field.name])}, got {value!r}")
            takes_float = float in (hints[field.name], *typing.get_args(hints[field.name]))
            if takes_float and isinstance(value, int):  # JSON's 1 for 1.0: keep tensors float
                object.__setattr__(self, field.name, float(value))

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; known fields: "
                             f"{sorted(known)}")
        return cls(**data)


def _fits(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return value is None
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is tuple and args[-1:] == (Ellipsis,):
        return isinstance(value, tuple) and all(_fits(v, args[0]) for v in value)
    if origin is tuple:
        return isinstance(value, tuple) and len(value) == len(args) and \
            all(_fits(v, a) for v, a in zip(value, args))
    if origin is dict:
        return isinstance(value, dict) and all(
            _fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items())
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # inf and nan make no sense in any float field of ours
        return isinstance(value, (int, float)) and not isinstance(value, bool) and \
            math.isfinite(value)
    return isinstance(value, hint)


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "None"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple and args[-1:] == (Ellipsis,):
        return f"a tuple of {_describe(args[0])}"
    if origin is tuple:
        return f"a tuple of {len(args)} ({', '.join(_describe(a) for a in args)})"
    if origin is dict:
        return f"a dict of {_describe(args[0])} -> {_describe(args[1])}"
    return {int: "an int", float: "a finite number", bool: "true or false",
            str: "a string"}.get(hint, getattr(hint, "__name__", str(hint)))
