"""Running a task's ``execute`` natively, without a host: the Python twin of the Rust SDK's
``tessera_guest::testing``. It records log lines, subtasks (with their inputs as JSON), the
display name, progress and sleeps, and checks submissions as the host does::

    from tessera_guest.testing import run

    def test_the_workflow_submits_one_sleep_per_count():
        result = run(ParallelSleepWorkflow(count=3, seconds=1.5))
        assert result.error is None
        assert [s.input for s in result.subtasks][2] == {"index": 2, "seconds": 1.5}

Importing this module outside a component installs a stand-in for the bindings
componentize-py generates (``wit_world``, ``componentize_py_types``); inside a component the
real ones are used and this module is not needed.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
import types as _modules
from typing import Any, Optional

from . import Context, Task, TaskError, _HANDLE_BIT, _task_error


@dataclasses.dataclass
class LogRecord:
    """A log line the task wrote."""

    level: str
    message: str
    fields: dict[str, str]


@dataclasses.dataclass
class SubmittedSubtask:
    """A subtask the task submitted."""

    name: str
    version: str
    input: Any
    display: Optional[str]
    depends_on: list[int]
    max_retries: int
    cluster: Optional[str]


@dataclasses.dataclass
class Run:
    """What one attempt did."""

    #: The attempt's failure as the host would see it (``message``, ``code``), or None.
    error: Optional[Any] = None
    logs: list[LogRecord] = dataclasses.field(default_factory=list)
    subtasks: list[SubmittedSubtask] = dataclasses.field(default_factory=list)
    display: Optional[str] = None
    progress: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    slept: float = 0.0


_current: Optional[Run] = None
_ids = ("job", "task", 1)
_max_subtasks = 100_000


def _install() -> None:
    """Puts the stand-in bindings in ``sys.modules`` unless real ones are there."""
    if "wit_world" in sys.modules:
        return

    class Level(enum.Enum):
        TRACE = 0
        DEBUG = 1
        INFO = 2
        WARN = 3
        ERROR = 4

    @dataclasses.dataclass
    class TaskIdentifier:
        name: str
        version: str

    @dataclasses.dataclass
    class TaskErrorRecord:
        message: str
        code: Optional[str]

    @dataclasses.dataclass
    class Field:
        key: str
        value: str

    @dataclasses.dataclass
    class Subtask:
        identifier: Any
        input: str
        display: Optional[str]
        depends_on: list[int]
        max_retries: int
        cluster: Optional[str]

    @dataclasses.dataclass
    class SubtaskHandle:
        index: int

    @dataclasses.dataclass
    class SubmitErrorTooMany:
        value: int

    @dataclasses.dataclass
    class SubmitErrorBadDependency:
        value: int

    @dataclasses.dataclass
    class SubmitErrorInvalid:
        value: str

    @dataclasses.dataclass
    class TaskContext:
        job_id: str
        task_id: str
        attempt: int

    @dataclasses.dataclass(frozen=True)
    class Err(Exception):
        value: Any

    types = _modules.ModuleType("wit_world.imports.types")
    types.Level = Level
    types.TaskIdentifier = TaskIdentifier
    types.TaskError = TaskErrorRecord
    types.Field = Field
    types.Subtask = Subtask
    types.SubtaskHandle = SubtaskHandle
    types.TaskContext = TaskContext
    SubmitErrorTooMany.__name__ = "SubmitError_TooMany"
    SubmitErrorBadDependency.__name__ = "SubmitError_BadDependency"
    SubmitErrorInvalid.__name__ = "SubmitError_Invalid"

    host = _modules.ModuleType("wit_world.imports.host")

    def log(level: Any, message: str, fields: list) -> None:
        _run().logs.append(LogRecord(level.name.lower(), message, {f.key: f.value for f in fields}))

    def sleep(nanoseconds: int) -> None:
        _run().slept += nanoseconds / 1e9

    def submit_subtasks(subtasks: list) -> list:
        run = _run()
        first = len(run.subtasks)
        if first + len(subtasks) > _max_subtasks:
            raise Err(SubmitErrorTooMany(_max_subtasks))
        for i, s in enumerate(subtasks):
            for d in s.depends_on:
                earlier = d & ~_HANDLE_BIT < (first + i if d & _HANDLE_BIT else i)
                if not earlier:
                    raise Err(SubmitErrorBadDependency(d))
            if len(set(s.depends_on)) != len(s.depends_on):
                raise Err(SubmitErrorInvalid("a depends_on list names a subtask twice"))
        for s in subtasks:
            run.subtasks.append(
                SubmittedSubtask(
                    s.identifier.name,
                    s.identifier.version,
                    json.loads(s.input),
                    s.display,
                    list(s.depends_on),
                    s.max_retries,
                    s.cluster,
                )
            )
        return [SubtaskHandle(first + i) for i in range(len(subtasks))]

    def set_display(display: str) -> None:
        _run().display = display

    def progress(label: str, done: int, total: int) -> None:
        d, t = _run().progress.get(label, (0, 0))
        _run().progress[label] = (d + done, t + total)

    def current() -> Any:
        job, task, attempt = _ids
        return TaskContext(job, task, attempt)

    for f in (log, sleep, submit_subtasks, set_display, progress, current):
        setattr(host, f.__name__, f)

    imports = _modules.ModuleType("wit_world.imports")
    imports.host = host
    imports.types = types
    exports = _modules.ModuleType("wit_world.exports")
    exports.Tasks = object
    world = _modules.ModuleType("wit_world")
    world.imports = imports
    world.exports = exports
    cpt = _modules.ModuleType("componentize_py_types")
    cpt.Err = Err
    sys.modules.update(
        {
            "wit_world": world,
            "wit_world.imports": imports,
            "wit_world.imports.host": host,
            "wit_world.imports.types": types,
            "wit_world.exports": exports,
            "componentize_py_types": cpt,
        }
    )


def _run() -> Run:
    if _current is None:
        raise RuntimeError("host functions are only available while tessera_guest.testing.run runs a task")
    return _current


def run(task: Task, *, job_id: str = "job", task_id: str = "task", attempt: int = 1,
        max_subtasks: int = 100_000) -> Run:
    """Runs ``task.execute`` once, as an attempt would, and returns what it did."""
    global _current, _ids, _max_subtasks
    _install()
    _current, _ids, _max_subtasks = Run(), (job_id, task_id, attempt), max_subtasks
    try:
        # The input goes through JSON, as it would on its way to a component.
        decoded = type(task).from_input(task.to_input())
        decoded.execute(Context())
    except BaseException as e:  # noqa: BLE001 - every failure is the attempt's
        _current.error = _task_error(e)
    result, _current = _current, None
    return result


_install()

__all__ = ["LogRecord", "Run", "SubmittedSubtask", "TaskError", "run"]
