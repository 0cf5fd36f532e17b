"""Seeded reasoning-task generators and their registry (`--task NAME`)."""

import inspect
import math

from .base import Task
from .chains import PermutationChains
from .family import FamilyRelations
from .graph import GraphReachability
from .logic import NestedLogic
from .modarith import ModularArithmetic

TASKS: dict[str, type[Task]] = {
    cls.name: cls for cls in (GraphReachability, NestedLogic, FamilyRelations, PermutationChains,
                              ModularArithmetic)
}


def make_task(name: str, **options) -> Task:
    """The task `name` built with `options` (TrainConfig.task_options), each checked against
    the generator's signature: a known name, and the kind of value its default has."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    params = inspect.signature(TASKS[name]).parameters
    for key, value in options.items():
        if key not in params:
            raise ValueError(f"unknown option {key!r} for task {name!r}; its options: "
                             f"{sorted(params)}")
        default = params[key].default
        if not _same_kind(value, default):
            raise ValueError(f"task option {key!r} of {name!r} takes a value like its default "
                             f"{default!r}, got {value!r}")
    return TASKS[name](**options)


def _same_kind(value, default) -> bool:
    if default is None or default is inspect.Parameter.empty:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and math.isfinite(value)
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list))
    return isinstance(value, type(default))


__all__ = ["TASKS", "Task", "make_task"]
