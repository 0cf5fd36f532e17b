"""Seeded reasoning-task generators and their registry (`--task NAME`)."""

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
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name](**options)


__all__ = ["TASKS", "Task", "make_task"]
