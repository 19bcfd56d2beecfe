"""Running a task's ``execute`` natively, without a host: the Python twin of the Rust SDK's
``tessera_guest::testing``. It records log lines (with typed field values), subtasks (with
their inputs as JSON), the display name, progress, sleeps, the output and cache writes, gives
the task dependencies' outputs and a cache to read, and checks submissions as the host does::

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

#: The host's limits on the job cache, which the stand-in enforces too.
_MAX_KEY_CHARS = 512
_MAX_VALUE_BYTES = 1 << 20
_MAX_WRITES = 1000
_PAGE = 1000


@dataclasses.dataclass
class LogRecord:
    """A log line the task wrote; field values as the host receives them (str, int, float or
    bool)."""

    level: str
    message: str
    fields: dict[str, Any]


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
    #: The output it set (kept by the host only if ``error`` is None).
    output: Optional[bytes] = None
    #: The subtask (a position in ``subtasks``) whose output it took as its own.
    output_from: Optional[int] = None
    #: Its cache writes by key (None: deleted), the last per key.
    cache_writes: dict[str, Optional[bytes]] = dataclasses.field(default_factory=dict)

    def output_json(self) -> Any:
        """The output decoded from JSON."""
        if self.output is None:
            raise AssertionError("the task set no output")
        return json.loads(self.output)


_current: Optional[Run] = None
_ids = ("job", "task", 1)
_max_subtasks = 100_000
#: Handle index → output bytes (None: it set none).
_dependencies: dict[int, Optional[bytes]] = {}
#: What committed to the cache before the attempt.
_cache: dict[str, bytes] = {}
_writes = 0


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
        value: Any

    def variant(name: str, kind: type) -> type:
        cls = dataclasses.make_dataclass(name, [("value", kind)])
        return cls

    @dataclasses.dataclass
    class Subtask:
        identifier: Any
        input: str
        display: Optional[str]
        depends_on: list[int]
        depends_on_all: bool
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
    for case, kind in (("Text", str), ("Signed", int), ("Unsigned", int), ("Float", float), ("Boolean", bool)):
        setattr(types, "FieldValue_" + case, variant("FieldValue_" + case, kind))
    errors = {}
    for case, kind in (("InvalidKey", str), ("TooLarge", int), ("TooManyWrites", int),
                       ("NotADependency", int), ("Unavailable", str)):
        errors[case] = variant("DataError_" + case, kind)
        setattr(types, "DataError_" + case, errors[case])

    host = _modules.ModuleType("wit_world.imports.host")

    def log(level: Any, message: str, fields: list) -> None:
        _run().logs.append(LogRecord(level.name.lower(), message, {f.key: f.value.value for f in fields}))

    def sleep(nanoseconds: int) -> None:
        _run().slept += nanoseconds / 1e9

    def submit_subtasks(subtasks: list) -> list:
        run = _run()
        first = len(run.subtasks)
        if first + len(subtasks) > _max_subtasks:
            raise Err(SubmitErrorTooMany(_max_subtasks))
        for i, s in enumerate(subtasks):
            if s.depends_on_all:
                s.depends_on = list(range(first + i))
                continue
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

    def dependencies() -> list:
        return [SubtaskHandle(i) for i in _dependencies]

    def output_of(dependency: Any) -> Optional[bytes]:
        if dependency.index not in _dependencies:
            raise Err(errors["NotADependency"](dependency.index))
        return _dependencies[dependency.index]

    def output_from(subtask: Any) -> None:
        if subtask.index >= len(_run().subtasks):
            raise Err(SubmitErrorBadDependency(subtask.index))
        _run().output_from = subtask.index

    for f in (log, sleep, submit_subtasks, set_display, progress, current, dependencies,
              output_of, output_from):
        setattr(host, f.__name__, f)

    cache = _modules.ModuleType("wit_world.imports.cache")

    def check_key(key: str) -> None:
        if not key or len(key) > _MAX_KEY_CHARS or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in key):
            raise Err(errors["InvalidKey"](f"{key!r}: keys are 1 to {_MAX_KEY_CHARS} characters without control characters"))

    def write(key: str, value: Optional[bytes]) -> None:
        global _writes
        check_key(key)
        if value is not None and len(value) > _MAX_VALUE_BYTES:
            raise Err(errors["TooLarge"](_MAX_VALUE_BYTES))
        if _writes >= _MAX_WRITES:
            raise Err(errors["TooManyWrites"](_MAX_WRITES))
        _writes += 1
        _run().cache_writes[key] = value

    def get(key: str) -> Optional[bytes]:
        check_key(key)
        own = _run().cache_writes
        return own[key] if key in own else _cache.get(key)

    def put(key: str, value: bytes) -> None:
        write(key, value)

    def delete(key: str) -> None:
        write(key, None)

    def list_keys(prefix: str, start_after: Optional[str]) -> list:
        keys = set(_cache)
        for k, v in _run().cache_writes.items():
            (keys.add if v is not None else keys.discard)(k)
        chosen = sorted(k for k in keys if k.startswith(prefix) and (start_after is None or k > start_after))
        return chosen[:_PAGE]

    cache.get, cache.put, cache.delete, cache.list = get, put, delete, list_keys

    imports = _modules.ModuleType("wit_world.imports")
    imports.host = host
    imports.cache = cache
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
            "wit_world.imports.cache": cache,
            "wit_world.imports.types": types,
            "wit_world.exports": exports,
            "componentize_py_types": cpt,
        }
    )


def _run() -> Run:
    if _current is None:
        raise RuntimeError("host functions are only available while tessera_guest.testing.run runs a task")
    return _current


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def run(task: Task, *, job_id: str = "job", task_id: str = "task", attempt: int = 1,
        max_subtasks: int = 100_000, dependencies: Optional[dict[int, Any]] = None,
        cache: Optional[dict[str, Any]] = None) -> Run:
    """Runs ``task.execute`` once, as an attempt would, and returns what it did.

    ``dependencies`` maps the handle index of each subtask the task depends on to its output
    (a JSON value; ``bytes`` as they are; ``None`` for none); ``cache`` is what the job cache
    holds before the attempt (JSON values, or ``bytes``)."""
    global _current, _ids, _max_subtasks, _dependencies, _cache, _writes
    _install()
    _current, _ids, _max_subtasks = Run(), (job_id, task_id, attempt), max_subtasks
    as_bytes = lambda v: v if isinstance(v, bytes) or v is None else _json(v)  # noqa: E731
    _dependencies = {int(k): as_bytes(v) for k, v in (dependencies or {}).items()}
    _cache = {str(k): as_bytes(v) for k, v in (cache or {}).items()}
    _writes = 0
    context = Context()
    try:
        # The input goes through JSON, as it would on its way to a component.
        decoded = type(task).from_input(task.to_input())
        decoded.execute(context)
    except BaseException as e:  # noqa: BLE001 - every failure is the attempt's
        _current.error = _task_error(e)
    _current.output = context._output if _current.output_from is None else None
    result, _current = _current, None
    return result


_install()

__all__ = ["LogRecord", "Run", "SubmittedSubtask", "TaskError", "run"]
