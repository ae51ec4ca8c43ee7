"""Pydantic's validation errors as the driver's one-line problems, read off the model's annotations."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from automation.problems import Rule, problem, problems


class Inner(BaseModel):
    model_config = ConfigDict(strict=True)
    level: Annotated[list[Annotated[int, Field(ge=1)]], Rule("list positive integers")]
    seconds: Optional[Annotated[float, Field(ge=0)]]


class Outer(BaseModel):
    model_config = ConfigDict(strict=True)
    name: str
    count: Optional[int]
    mode: Literal["warm", "cold"]
    status: Literal["pass", "fail", "skip"]
    inner: list[Inner]
    version: int

    @field_validator("version")
    @classmethod
    def _two(cls, version: int) -> int:
        if version != 2:
            raise problem(f"is {version}, this reads 2")
        return version


GOOD = {"name": "n", "count": None, "mode": "warm", "status": "skip", "version": 2,
        "inner": [{"level": [1, 2], "seconds": 0.5}]}


def test_a_valid_value_has_no_problems() -> None:
    assert problems(Outer, GOOD) == []


def test_each_problem_is_one_line_naming_where_and_what() -> None:
    bad = {**GOOD, "count": "3", "mode": "hot", "status": "ok", "version": 1,
           "inner": [{"level": [0, -1], "seconds": -1.0}, {"seconds": True}]}
    del bad["name"]
    assert problems(Outer, bad) == [
        "report.name is missing",
        "report.count should be int/NoneType, got str",
        "report.mode should be 'warm' or 'cold', got 'hot'",
        "report.status should be one of ('pass', 'fail', 'skip'), got 'ok'",
        "report.inner[0].level should list positive integers, got [0, -1]",  # once for both items
        "report.inner[0].seconds is negative (-1.0)",
        "report.inner[1].level is missing",
        "report.inner[1].seconds should be int/float/NoneType, got bool",
        "report.version is 1, this reads 2",
    ]


def test_a_wrong_container_is_named_by_its_type() -> None:
    assert problems(Outer, None, root="data") == ["data should be dict, got NoneType"]
    assert problems(Outer, {**GOOD, "inner": [{"level": None, "seconds": 1}]}) == [
        "report.inner[0].level should be list, got NoneType"]
