"""Pydantic's validation errors in the driver's words: one line per problem, saying where it is
and what was expected (``report.checks[1].seconds is missing``, ``report.capacity.max_sandboxes
should be int/NoneType, got str``), read off the model's own annotations.

A field whose rule pydantic's words would not say carries a :class:`Rule` in its ``Annotated``
metadata (``should be the three load averages``); a validator that needs its own words raises
:func:`problem`.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

_OWN = "driver"
_TYPE_NAMES = {float: "int/float"}
READING = {"reading": True}
"""The validation context of data read from outside (a file), which validators may hold to
stricter rules than values given by code, e.g. no defaults."""


class Rule(str):
    """What a value must be, as the end of ``<where> should ...`` (any problem inside it is that)."""


def problem(message: str) -> PydanticCustomError:
    """An error a validator raises; the line reads ``<where> <message>``."""
    return PydanticCustomError(_OWN, message)


def problems(model: type[BaseModel], data: Any, root: str = "report") -> list[str]:
    """Every problem of ``data`` as a ``model``, one line each (empty: valid)."""
    try:
        model.model_validate(data, context=READING)
    except ValidationError as error:
        return list(dict.fromkeys(_line(model, data, detail, root) for detail in error.errors()))
    return []


def _unwrap(annotation: Any) -> tuple[Any, bool, Optional[Rule]]:
    """(the type inside Annotated/Optional, whether None is allowed, the outermost Rule)."""
    nullable, rule = False, None
    while True:
        if get_origin(annotation) is Annotated:
            annotation, *extras = get_args(annotation)
            rule = rule or next((extra for extra in extras if isinstance(extra, Rule)), None)
        elif get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation):
            nullable = True
            (annotation,) = [arg for arg in get_args(annotation) if arg is not type(None)]
        else:
            return annotation, nullable, rule


def _step(annotation: Any, key: Any) -> tuple[Any, Optional[Rule]]:
    """The annotation of ``annotation[key]`` and the Rule of that field, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields[key]
        return field.annotation, next((m for m in field.metadata if isinstance(m, Rule)), None)
    args = get_args(annotation)
    return (args[-1] if args else Any), None


def _expected(annotation: Any, nullable: bool) -> str:
    if get_origin(annotation) is Literal:
        choices = [repr(choice) for choice in get_args(annotation)]
        return " or ".join(choices) if len(choices) == 2 else f"one of ({', '.join(choices)})"
    core = get_origin(annotation) or annotation
    if isinstance(core, type) and issubclass(core, BaseModel):
        core = dict
    name = _TYPE_NAMES.get(core, getattr(core, "__name__", str(core)))
    return f"{name}/NoneType" if nullable else name


def _line(model: type[BaseModel], data: Any, detail: Any, root: str) -> str:
    where, annotation, value = root, model, data
    nullable, kind, loc = False, detail["type"], detail["loc"]
    for depth, key in enumerate(loc, start=1):
        annotation, field_rule = _step(annotation, key)
        annotation, nullable, rule = _unwrap(annotation)
        rule = field_rule or rule
        where += f"[{key}]" if isinstance(key, int) else f".{key}"
        value = value[key] if isinstance(value, (dict, list)) and kind != "missing" else value
        at_field = depth == len(loc)
        if rule and kind != "missing" and not (at_field and kind.endswith("_type")):
            return f"{where} should {rule}, got {value!r}"
    if kind == "missing":
        return f"{where} is missing"
    if kind == _OWN:
        return f"{where} {detail['msg']}"
    if kind == "greater_than_equal" and detail["ctx"].get("ge") == 0:
        return f"{where} is negative ({detail['input']})"
    got = repr(detail["input"]) if kind == "literal_error" else type(detail["input"]).__name__
    return f"{where} should be {_expected(annotation, nullable)}, got {got}"
