"""The Python SDK, natively: python3 -m unittest discover -s guest-sdk-python/tests
(cargo test runs it too, in cli/tests/python.rs)."""

import pathlib
import sys
import unittest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent / "examples" / "parallel-sleep-py"))

from tessera_guest import Context, DataError, SubmitError, Subtask, SubtaskHandle, Task, TaskError  # noqa: E402
from tessera_guest.testing import run  # noqa: E402

import parallel_workflow  # noqa: E402
from parallel_workflow import ParallelSleepWorkflow, SleepTask  # noqa: E402


class Versioned(Task):
    version = "v1.2"
    name = "custom.Name"
    n: int = 0

    def execute(self, context: Context) -> None:
        pass


class NamedField(Task):
    name: str

    def execute(self, context: Context) -> None:
        context.logger.info("hi", who=self.name, n=3, ok=True, nothing=None)


class Chain(Task):
    def execute(self, context: Context) -> None:
        a = context.submit_subtask(Versioned(n=1))
        b = context.submit_subtasks([Versioned(n=2), Versioned(n=3)])
        context.submit_subtask(Versioned(n=4), depends_on=[a, *b], display="last")


class BadDependency(Task):
    def execute(self, context: Context) -> None:
        context.submit_subtask(Versioned(), depends_on=[0])


class ServedElsewhere(Task, export=False):
    n: int


class Reduce(Task):
    """Reads its dependencies' outputs and the cache, and writes both back."""

    def execute(self, context: Context) -> None:
        total = context.cache.get("base", 0)
        for dep in context.dependencies():
            total += context.output_of(dep)
        context.cache.put("sum", total)
        context.cache.delete("base")
        assert context.cache.list() == ["sum"], context.cache.list()
        assert context.cache.get("sum") == total, "reads its own writes"
        try:
            context.output_of(SubtaskHandle(99))
        except DataError as e:
            assert e.code == "not-a-dependency", e.code
        else:
            raise AssertionError("a stranger's output was read")
        context.set_output({"sum": total})


class Gather(Task):
    def execute(self, context: Context) -> None:
        context.set_output("replaced")
        context.submit_subtask(Versioned(n=1))
        handles = context.submit_subtasks([Versioned(n=2), Subtask(Reduce(), after_all=True)])
        try:
            context.set_output_from(SubtaskHandle(5))
        except SubmitError as e:
            assert e.code == "bad-dependency", e.code
        context.set_output_from(handles[1])


class BigValue(Task):
    def execute(self, context: Context) -> None:
        context.cache.put_bytes("big", b"x" * ((1 << 20) + 1))


class Sleeper(Task):
    def execute(self, context: Context) -> None:
        context.sleep(-1)


class Sdk(unittest.TestCase):
    def test_identifiers_come_from_the_class(self):
        self.assertEqual(SleepTask.identifier(), ("SleepTask", "v0.0"))
        self.assertEqual(Versioned.identifier(), ("custom.Name", "v1.2"))
        # A field called `name` is a field, not the task's name.
        self.assertEqual(NamedField.identifier(), ("NamedField", "v0.0"))

    def test_the_workflow_submits_one_sleep_per_count(self):
        r = run(ParallelSleepWorkflow(count=3, seconds=1.5))
        self.assertIsNone(r.error)
        self.assertEqual([s.name for s in r.subtasks], ["SleepTask"] * 3)
        self.assertEqual(r.subtasks[2].input, {"index": 2, "seconds": 1.5})
        self.assertEqual(r.progress["sleeps"], (0, 3))
        self.assertEqual(r.logs[0].message, "Submitting sleep subtasks")
        self.assertEqual(r.logs[0].fields, {"count": 3, "seconds": 1.5})

    def test_a_sleep_logs_around_its_sleep_and_names_itself(self):
        r = run(SleepTask(index=4, seconds=0.25))
        self.assertIsNone(r.error)
        self.assertEqual(r.display, "SleepTask(4)")
        self.assertEqual([l.message for l in r.logs], ["Starting sleep task", "Finished sleep task"])
        self.assertEqual(r.logs[0].fields, {"index": 4})
        self.assertEqual(r.slept, 0.25)
        self.assertEqual(r.progress["sleeps"], (1, 0))

    def test_field_values_keep_their_types(self):
        r = run(NamedField(name="ada"))
        self.assertEqual(r.logs[0].fields, {"who": "ada", "n": 3, "ok": True, "nothing": "null"})
        self.assertIs(r.logs[0].fields["ok"], True)

    def test_outputs_and_the_cache_are_read_and_written_like_the_host_does(self):
        r = run(Reduce(), dependencies={0: 1, 1: 2}, cache={"base": 100})
        self.assertIsNone(r.error)
        self.assertEqual(r.output_json(), {"sum": 103})
        self.assertEqual(r.cache_writes, {"sum": b"103", "base": None})
        none = run(Reduce(), dependencies={0: None})
        self.assertEqual(none.error.code, "no-output")
        self.assertIsNone(none.output, "a failed attempt keeps no output")

    def test_a_reduce_step_after_all_and_an_output_taken_from_it(self):
        r = run(Gather())
        self.assertIsNone(r.error)
        self.assertEqual(r.subtasks[2].depends_on, [0, 1])
        self.assertEqual(r.output_from, 2)
        self.assertIsNone(r.output, "the forwarded output replaces the returned one")

    def test_cache_limits_are_the_hosts(self):
        r = run(BigValue())
        self.assertEqual(r.error.code, "too-large")

    def test_handles_name_subtasks_across_calls(self):
        r = run(Chain())
        self.assertIsNone(r.error)
        self.assertEqual(r.subtasks[3].depends_on, [0x8000_0000, 0x8000_0001, 0x8000_0002])
        self.assertEqual(r.subtasks[3].display, "last")

    def test_a_bad_dependency_fails_the_attempt_with_its_code(self):
        r = run(BadDependency())
        self.assertEqual(r.error.code, "bad-dependency")
        self.assertEqual(r.subtasks, [])

    def test_an_exception_fails_with_its_traceback(self):
        r = run(Sleeper())
        self.assertIsNone(r.error.code)
        self.assertIn("ValueError: sleep needs a finite, non-negative number of seconds", r.error.message)
        self.assertIn("Traceback (most recent call last)", r.error.message)

    def test_a_negative_sleep_is_refused_permanently(self):
        r = run(ParallelSleepWorkflow(count=1, seconds=-1))
        self.assertEqual(r.error.code, "permanent:bad-input")
        self.assertIn("seconds must be a non-negative number", r.error.message)

    def test_inputs_are_checked_against_the_fields(self):
        with self.assertRaises(TaskError) as e:
            SleepTask.from_input('{"index": "three", "seconds": 1}')
        self.assertIn("field `index`: expected an integer", e.exception.message)
        self.assertTrue(e.exception.permanent)
        with self.assertRaises(TaskError) as e:
            SleepTask.from_input('{"index": 3}')
        self.assertIn("missing field `seconds`", e.exception.message)
        # An int is a float; unknown fields are ignored, as serde does.
        t = SleepTask.from_input('{"index": 3, "seconds": 2, "extra": 1}')
        self.assertEqual((t.index, t.seconds), (3, 2.0))
        self.assertIsInstance(t.seconds, float)

    def test_permanent_codes_follow_the_wit(self):
        self.assertEqual(TaskError("x", permanent=True).wire_code(), "permanent")
        self.assertEqual(TaskError("x", code="gone", permanent=True).wire_code(), "permanent:gone")
        self.assertEqual(TaskError("x", code="gone").wire_code(), "gone")

    def test_the_example_exports_its_two_task_types(self):
        import tessera_guest

        exported = [c for c in tessera_guest._TASK_TYPES if c.__module__ == parallel_workflow.__name__]
        self.assertEqual([c.identifier() for c in exported], [("ParallelSleepWorkflow", "v0.0"), ("SleepTask", "v0.0")])
        self.assertEqual(SubtaskHandle(3).index, 3)

    def test_a_type_served_elsewhere_is_submitted_but_not_exported(self):
        import tessera_guest

        self.assertNotIn(ServedElsewhere, tessera_guest._TASK_TYPES)
        self.assertIn(Versioned, tessera_guest._TASK_TYPES)
        self.assertEqual(ServedElsewhere(n=2).to_input(), '{"n": 2}')


if __name__ == "__main__":
    unittest.main()
