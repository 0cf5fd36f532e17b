"""Seeded reasoning-task generators and their registry (`--task NAME`)."""

import importlib
import inspect
import math
import os
import sys

from .base import Task
from .chains import PermutationChains
from .composition import Composition
from .family import FamilyRelations
from .graph import GraphReachability
from .logic import NestedLogic
from .modarith import ModularArithmetic
from .parity import Parity

TASKS: dict[str, type[Task]] = {
    cls.name: cls for cls in (GraphReachability, NestedLogic, FamilyRelations, PermutationChains,
                              Composition, Parity, ModularArithmetic)
}


def task_class(name: str) -> type[Task]:
    """A registered task's class, or any importable Task subclass named "package.module:Class"
    (a user's own task)."""
    if name in TASKS:
        return TASKS[name]
    module, _, attribute = name.partition(":")
    if not (module and attribute):
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}, or name your "
                         "own Task subclass as package.module:ClassName")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: a module beside the user
    try:
        found = importlib.import_module(module)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"task {name!r}: cannot import it ({error}); is {module!r} on the "
                         "Python path (PYTHONPATH, or installed)?") from None
    if not (isinstance(found, type) and issubclass(found, Task)):
        raise ValueError(f"task {name!r} is not a subclass of loopformer.tasks.Task")
    return found


def task_name(task: Task) -> str:
    """What a run records to rebuild `task`: its registered name or "module:Class"."""
    cls = type(task)
    if TASKS.get(getattr(cls, "name", None)) is cls:
        return cls.name
    return f"{cls.__module__}:{cls.__qualname__}"


def make_task(name: str, **options) -> Task:
    """The task `name` (registered, or "package.module:Class") built with `options`
    (TrainConfig.task_options), each checked against the generator's signature: a known
    name, and the kind of value its default has."""
    cls = task_class(name)
    params = inspect.signature(cls).parameters
    for key, value in options.items():
        if key not in params:
            raise ValueError(f"unknown option {key!r} for task {name!r}; its options: "
                             f"{sorted(params)}")
        default = params[key].default
        if isinstance(default, bool) and str(value).lower() in ("true", "false"):
            value = options[key] = str(value).lower() == "true"  # "true" from a command line
        if isinstance(default, (tuple, list)) and isinstance(value, (str, int, float)) \
                and not isinstance(value, bool):  # "1,2,3" or 1 from a command line
            value = options[key] = _numbers(key, str(value))
        if not _same_kind(value, default):
            raise ValueError(f"task option {key!r} of {name!r} takes a value like its default "
                             f"{default!r}, got {value!r}")
    return cls(**options)


def _numbers(key: str, text: str) -> tuple:
    """"1,2,3" or "[1, 2, 3]" -> (1, 2, 3): a list-valued option given on a command line."""
    items = [item.strip() for item in text.strip().strip("[]()").split(",")]
    try:
        return tuple(float(item) if any(c in item for c in ".eE") else int(item)
                     for item in items)
    except ValueError:
        raise ValueError(f"task option {key!r} takes numbers separated by commas, e.g. "
                         f"'2,3,4,5'; got {text!r}") from None


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


__all__ = ["TASKS", "Task", "make_task", "task_class", "task_name"]
