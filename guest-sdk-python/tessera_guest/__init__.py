"""Tessera task components in Python.

A task type is a class: its typed fields are its input (the class becomes a dataclass), and
``execute(self, context)`` does the work::

    from tessera_guest import Context, Task

    class SleepTask(Task):
        index: int
        seconds: float

        def execute(self, context: Context) -> None:
            context.set_display(f"SleepTask({self.index})")
            context.logger.info("Starting sleep task", index=self.index)
            context.sleep(self.seconds)

A task type is identified by its class name and ``version`` (``"v0.0"`` unless the class says
otherwise; ``name`` overrides the class name). An exception raised by ``execute`` fails the
attempt with its message and traceback; raise :class:`TaskError` to give a code, or with
``permanent=True`` to fail at once whatever the retries.

A task hands a result on with ``context.set_output(value)`` (JSON); the tasks that depend on
it read it with ``context.output_of(handle)``; every task of a job shares a key-value cache,
``context.cache`` (``put``, ``get``, ``delete``, ``list``). Both are kept only if the attempt
succeeds.

Build a component with ``tessera build-python tasks.py -o tasks.wasm`` (componentize-py,
pinned): every ``Task`` subclass defined in ``tasks.py`` is exported.
"""

from __future__ import annotations

import dataclasses
import json
import math
import traceback
import typing
from typing import Any, ClassVar, Iterable, Optional, Sequence, Union

__all__ = [
    "Cache",
    "Context",
    "DataError",
    "Logger",
    "Progress",
    "SubmitError",
    "Subtask",
    "SubtaskHandle",
    "Task",
    "TaskError",
]

# The bindings componentize-py generates are imported now, while it pre-initializes the
# interpreter: a component cannot import a module at run time that was not loaded then.
# Natively they are absent until `tessera_guest.testing` installs stand-ins; every use
# below imports them where it needs them, from the modules loaded by then.
try:
    import componentize_py_types  # noqa: F401
    import wit_world.imports.cache  # noqa: F401
    import wit_world.imports.host  # noqa: F401
    import wit_world.imports.types  # noqa: F401
except ImportError:
    pass

#: Every Task subclass defined so far, in definition order.
_TASK_TYPES: list[type] = []

#: The top bit of a ``depends-on`` entry: the rest is a handle's index (see the WIT).
_HANDLE_BIT = 0x8000_0000


class TaskError(Exception):
    """A failure the task reports on purpose: a message, an optional machine-readable code,
    and whether no retry can fix it (``permanent``)."""

    def __init__(self, message: str, *, code: Optional[str] = None, permanent: bool = False):
        super().__init__(message)
        self.message = message
        self.code = code
        self.permanent = permanent

    def wire_code(self) -> Optional[str]:
        """The code as the host reads it (``permanent`` / ``permanent:CODE`` when permanent)."""
        if not self.permanent:
            return self.code
        if self.code is None or self.code == "permanent" or self.code.startswith("permanent:"):
            return self.code or "permanent"
        return "permanent:" + self.code


class SubmitError(Exception):
    """The host refused a submission; nothing of it was kept. ``code`` is ``too-many``,
    ``bad-dependency`` or ``invalid``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class DataError(Exception):
    """Reading or writing data between tasks (outputs, the job cache) did not work; a refused
    write leaves nothing behind. ``code`` is ``invalid-key``, ``too-large``,
    ``too-many-writes``, ``not-a-dependency``, ``no-output``, ``data-unavailable`` or
    ``bad-encoding``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _data_error(value: Any) -> DataError:
    kind = type(value).__name__
    payload = getattr(value, "value", value)
    for suffix, code, say in (
        ("InvalidKey", "invalid-key", "invalid cache key: {}"),
        ("TooLarge", "too-large", "the value is larger than the limit of {} bytes; keep large data elsewhere"),
        ("TooManyWrites", "too-many-writes", "the attempt reached its limit of cache writes ({})"),
        ("NotADependency", "not-a-dependency", "subtask handle {} names no task this task depends on"),
        ("Unavailable", "data-unavailable", "job data is unavailable: {}"),
    ):
        if kind.endswith(suffix):
            return DataError(code, say.format(payload))
    return DataError("data-unavailable", str(payload))


@dataclasses.dataclass(frozen=True)
class SubtaskHandle:
    """A subtask this attempt submitted: its position among all it submitted so far. Pass it
    in another subtask's ``depends_on`` (in a later call too)."""

    index: int


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


class Task:
    """The base class of task types: subclasses declare typed fields and implement
    ``execute(self, context)``."""

    #: The task type's version, ``vMAJOR.MINOR``.
    version: ClassVar[str] = "v0.0"
    #: The task type's name (default: the class name).
    name: ClassVar[Optional[str]] = None

    def __init_subclass__(cls, export: bool = True, **kwargs: Any) -> None:
        # `class Echo(Task, export=False)` describes the input of a task type another
        # component serves: it can be submitted, but this component does not export it.
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(cls)
        if export:
            _TASK_TYPES.append(cls)

    @classmethod
    def identifier(cls) -> tuple[str, str]:
        """``(name, version)``: the class's own ``name`` and ``version`` attributes (not
        fields), else its class name and ``v0.0``."""
        own = cls.__dict__
        fields = own.get("__annotations__", {})
        name = own.get("name") if "name" not in fields else None
        version = own.get("version") if "version" not in fields else None
        return (
            name if isinstance(name, str) and name else cls.__name__,
            version if isinstance(version, str) else "v0.0",
        )

    def execute(self, context: "Context") -> None:
        """Runs one attempt; raise to fail it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement execute")

    @classmethod
    def from_input(cls, text: str) -> "Task":
        """The task whose input is the JSON ``text``; a mismatch raises a ``bad-input``
        TaskError."""
        name, version = cls.identifier()

        def bad(why: str) -> TaskError:
            return TaskError(
                f"input for {name}@{version} does not match its type: {why}",
                code="bad-input",
                permanent=True,
            )

        try:
            data = json.loads(text)
        except ValueError as e:
            raise bad(str(e)) from None
        if not isinstance(data, dict):
            raise bad(f"expected a JSON object, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        values = {}
        for field in dataclasses.fields(cls):
            if field.name in data:
                values[field.name] = _check(field.name, hints.get(field.name, Any), data[field.name], bad)
            elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise bad(f"missing field `{field.name}`")
        return cls(**values)

    def to_input(self) -> str:
        """This task's input as JSON text."""
        return json.dumps(dataclasses.asdict(self), allow_nan=False)


def _check(name: str, hint: Any, value: Any, bad: Any) -> Any:
    """``value`` as the field's annotation wants it, where the annotation is a plain type."""
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise bad(f"field `{name}`: expected an integer, got {json.dumps(value)}")
    if hint in (float, str, bool, list, dict) and not isinstance(value, hint):
        raise bad(f"field `{name}`: expected {hint.__name__}, got {json.dumps(value)}")
    if hint is float and not math.isfinite(value):
        raise bad(f"field `{name}`: expected a finite number")
    return value


@dataclasses.dataclass
class Subtask:
    """A subtask to submit, with its options."""

    task: Task
    #: Earlier subtasks it waits for: indexes within the same submission, or handles.
    depends_on: Sequence[Union[int, SubtaskHandle]] = ()
    #: How often it may be retried after a failure.
    max_retries: int = 0
    #: The cluster that runs it (default: the parent's).
    cluster: Optional[str] = None
    #: A name for people (default: the task name).
    display: Optional[str] = None
    #: Runs after every subtask this attempt submitted before it (the reduce step).
    after_all: bool = False


class Logger:
    """Structured log lines on the task's job: ``logger.info("message", key=value, ...)``."""

    def _log(self, level: Any, message: str, fields: dict[str, Any]) -> None:
        from wit_world.imports import host, types

        host.log(level, str(message), [types.Field(key=str(k), value=_field_value(v)) for k, v in fields.items()])

    def trace(self, message: str, **fields: Any) -> None:
        from wit_world.imports import types

        self._log(types.Level.TRACE, message, fields)

    def debug(self, message: str, **fields: Any) -> None:
        from wit_world.imports import types

        self._log(types.Level.DEBUG, message, fields)

    def info(self, message: str, **fields: Any) -> None:
        from wit_world.imports import types

        self._log(types.Level.INFO, message, fields)

    def warn(self, message: str, **fields: Any) -> None:
        from wit_world.imports import types

        self._log(types.Level.WARN, message, fields)

    warning = warn

    def error(self, message: str, **fields: Any) -> None:
        from wit_world.imports import types

        self._log(types.Level.ERROR, message, fields)


def _field_value(value: Any) -> Any:
    """A field value, typed: booleans, integers and floats as such, anything else as text."""
    from wit_world.imports import types

    if isinstance(value, bool):
        return types.FieldValue_Boolean(value)
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return types.FieldValue_Signed(value)
        if 0 <= value < 2**64:
            return types.FieldValue_Unsigned(value)
    if isinstance(value, float):
        return types.FieldValue_Float(value)
    return types.FieldValue_Text(_text(value))


def _text(value: Any) -> str:
    """A field value as text: strings as they are, everything else as JSON (or str)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


class Progress:
    """One progress indicator of the job (``context.progress("label")``)."""

    def __init__(self, label: str):
        self.label = label

    def add_total(self, n: int) -> "Progress":
        from wit_world.imports import host

        host.progress(self.label, 0, int(n))
        return self

    def done(self, n: int = 1) -> "Progress":
        from wit_world.imports import host

        host.progress(self.label, int(n), 0)
        return self


class Context:
    """What a running task may do: its only window on the world."""

    def __init__(self) -> None:
        self.logger = Logger()
        self._current = None
        self._output: Optional[bytes] = None
        #: The job cache, shared by every task of the job.
        self.cache = Cache()

    def _ids(self) -> Any:
        if self._current is None:
            from wit_world.imports import host

            self._current = host.current()
        return self._current

    @property
    def job_id(self) -> str:
        """The job this task belongs to."""
        return self._ids().job_id

    @property
    def task_id(self) -> str:
        """This task's id."""
        return self._ids().task_id

    @property
    def attempt(self) -> int:
        """This attempt's number, from 1."""
        return self._ids().attempt

    def sleep(self, seconds: float) -> None:
        """Sleeps without holding a host thread (``time.sleep`` works too)."""
        from wit_world.imports import host

        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"sleep needs a finite, non-negative number of seconds, got {seconds!r}")
        host.sleep(min(int(seconds * 1e9), 2**64 - 1))

    def set_display(self, display: str) -> None:
        """Sets this task's name for people (the console, ``tessera spans``)."""
        from wit_world.imports import host

        host.set_display(str(display))

    def progress(self, label: str) -> Progress:
        """The job's progress indicator ``label``."""
        return Progress(str(label))

    def submit_subtask(
        self,
        task: Task,
        *,
        depends_on: Sequence[Union[int, SubtaskHandle]] = (),
        max_retries: int = 0,
        cluster: Optional[str] = None,
        display: Optional[str] = None,
        after_all: bool = False,
    ) -> SubtaskHandle:
        """Submits one subtask, recorded if this attempt succeeds."""
        spec = Subtask(task, depends_on, max_retries, cluster, display, after_all)
        return self.submit_subtasks([spec])[0]

    def set_output(self, value: Any) -> None:
        """Sets this task's output to ``value`` as JSON (kept only if the attempt succeeds);
        the tasks that depend on it read it with :meth:`output_of`."""
        try:
            self._output = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise DataError("bad-encoding", f"the output is not JSON: {e}") from None

    def set_output_bytes(self, data: bytes) -> None:
        """Sets this task's output to raw bytes."""
        self._output = bytes(data)

    def set_output_from(self, subtask: SubtaskHandle) -> None:
        """Makes this task's output that of a subtask it submitted, once that computes (how a
        fan-out hands its reduce step's result up); wins over :meth:`set_output`."""
        from componentize_py_types import Err
        from wit_world.imports import host, types

        try:
            host.output_from(types.SubtaskHandle(subtask.index))
        except Err as e:
            raise _submit_error(e.value) from None

    def dependencies(self) -> list[SubtaskHandle]:
        """The subtasks this task depends on, as its parent's handles, in the order listed."""
        from componentize_py_types import Err
        from wit_world.imports import host

        try:
            return [SubtaskHandle(h.index) for h in host.dependencies()]
        except Err as e:
            raise _data_error(e.value) from None

    def output_bytes_of(self, dependency: SubtaskHandle) -> Optional[bytes]:
        """The raw output of a subtask this task depends on; None if it set none."""
        from componentize_py_types import Err
        from wit_world.imports import host, types

        try:
            return host.output_of(types.SubtaskHandle(dependency.index))
        except Err as e:
            raise _data_error(e.value) from None

    def output_of(self, dependency: SubtaskHandle) -> Any:
        """The output of a subtask this task depends on, decoded from JSON."""
        data = self.output_bytes_of(dependency)
        if data is None:
            raise DataError("no-output", f"the dependency with handle {dependency.index} returned no output")
        try:
            return json.loads(data)
        except ValueError as e:
            raise DataError("bad-encoding", f"the output of dependency {dependency.index} is not JSON: {e}") from None

    def submit_subtasks(self, subtasks: Iterable[Union[Task, Subtask]]) -> list[SubtaskHandle]:
        """Submits subtasks in one call; an int in ``depends_on`` names an earlier subtask of
        this call, a handle one from any call. Raises :class:`SubmitError`."""
        from componentize_py_types import Err
        from wit_world.imports import host, types

        wire = []
        for s in subtasks:
            if isinstance(s, Task):
                s = Subtask(s)
            if not isinstance(s, Subtask) or not isinstance(s.task, Task):
                raise TypeError(f"submit a Task or a Subtask, not {type(s).__name__}")
            name, version = s.task.identifier()
            deps = [d.index | _HANDLE_BIT if isinstance(d, SubtaskHandle) else int(d) for d in s.depends_on]
            wire.append(
                types.Subtask(
                    identifier=types.TaskIdentifier(name=name, version=version),
                    input=s.task.to_input(),
                    display=s.display,
                    depends_on=deps,
                    depends_on_all=bool(s.after_all),
                    max_retries=int(s.max_retries),
                    cluster=s.cluster,
                )
            )
        try:
            handles = host.submit_subtasks(wire)
        except Err as e:
            raise _submit_error(e.value) from None
        return [SubtaskHandle(h.index) for h in handles]


class Cache:
    """The job cache: keys (1 to 512 characters, no control characters) to values (at most
    1 MiB), shared by every task of the job. Writes are kept only if the attempt succeeds;
    reads see what committed before the attempt started, plus its own writes."""

    def put(self, key: str, value: Any) -> None:
        """Stores ``value`` as JSON under ``key``."""
        try:
            data = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise DataError("bad-encoding", f"the value for {key!r} is not JSON: {e}") from None
        self.put_bytes(key, data)

    def put_bytes(self, key: str, data: bytes) -> None:
        """Stores raw bytes under ``key``."""
        from componentize_py_types import Err
        from wit_world.imports import cache

        try:
            cache.put(str(key), bytes(data))
        except Err as e:
            raise _data_error(e.value) from None

    def get_bytes(self, key: str) -> Optional[bytes]:
        """The raw bytes under ``key``, or None."""
        from componentize_py_types import Err
        from wit_world.imports import cache

        try:
            return cache.get(str(key))
        except Err as e:
            raise _data_error(e.value) from None

    def get(self, key: str, default: Any = None) -> Any:
        """The JSON value under ``key``, decoded, or ``default``."""
        data = self.get_bytes(key)
        if data is None:
            return default
        try:
            return json.loads(data)
        except ValueError as e:
            raise DataError("bad-encoding", f"the cached value for {key!r} is not JSON: {e}") from None

    def delete(self, key: str) -> None:
        """Removes ``key`` (nothing if there is none)."""
        from componentize_py_types import Err
        from wit_world.imports import cache

        try:
            cache.delete(str(key))
        except Err as e:
            raise _data_error(e.value) from None

    def list(self, prefix: str = "") -> list[str]:
        """Every key that begins with ``prefix``, in byte order."""
        from componentize_py_types import Err
        from wit_world.imports import cache

        keys: list[str] = []
        while True:
            try:
                page = cache.list(str(prefix), keys[-1] if keys else None)
            except Err as e:
                raise _data_error(e.value) from None
            if not page:
                return keys
            keys.extend(page)


def _submit_error(value: Any) -> SubmitError:
    kind = type(value).__name__
    if kind.endswith("TooMany"):
        return SubmitError("too-many", f"the attempt would pass its limit of {value.value} subtasks")
    if kind.endswith("BadDependency"):
        return SubmitError(
            "bad-dependency",
            f"depends_on {value.value} does not name an earlier subtask of the same call or a handle",
        )
    return SubmitError("invalid", str(getattr(value, "value", value)))


def _task_error(e: BaseException) -> Any:
    """The WIT task-error for an exception raised by ``execute``."""
    from wit_world.imports import types

    if isinstance(e, TaskError):
        return types.TaskError(message=e.message, code=e.wire_code())
    if isinstance(e, (SubmitError, DataError)):
        return types.TaskError(message=e.message, code=e.code)
    trace = "".join(traceback.format_exception(e))
    return types.TaskError(message=f"{type(e).__name__}: {e}\n{trace}", code=None)


def export(task_types: Optional[Iterable[type]] = None) -> type:
    """The class componentize-py exports as ``tessera:task/tasks``: ``task_types`` (default:
    every Task subclass defined so far)."""
    from componentize_py_types import Err
    from wit_world import exports
    from wit_world.imports import types

    chosen = list(task_types if task_types is not None else _TASK_TYPES)
    by_id = {}
    for cls in chosen:
        if cls.identifier() in by_id:
            raise ValueError(f"two task types are named {cls.identifier()[0]}@{cls.identifier()[1]}")
        by_id[cls.identifier()] = cls

    class Tasks(exports.Tasks):
        def task_types(self) -> list:
            return [types.TaskIdentifier(name=n, version=v) for (n, v) in by_id]

        def execute(self, identifier: Any, input: str) -> Optional[bytes]:
            cls = by_id.get((identifier.name, identifier.version))
            if cls is None:
                raise Err(
                    types.TaskError(
                        message=f"this component does not implement {identifier.name}@{identifier.version}",
                        code="unknown-task",
                    )
                )
            context = Context()
            try:
                task = cls.from_input(input)
                task.execute(context)
            except BaseException as e:  # noqa: BLE001 - every failure becomes the attempt's
                raise Err(_task_error(e)) from None
            return context._output

    return Tasks
