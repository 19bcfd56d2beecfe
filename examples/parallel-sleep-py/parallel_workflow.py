"""The seed scenario in Python: a root task that fans out `count` sleeps.

Build: `tessera build-python examples/parallel-sleep-py/parallel_workflow.py -o parallel_workflow.wasm`
(componentize-py 0.25.1 on PATH, or `--componentize-py PATH`), then run it like any component:
`tessera runner parallel_workflow.wasm`.
"""

from tessera_guest import Context, Task, TaskError


class ParallelSleepWorkflow(Task):
    """The root task: submits `count` sleep tasks."""

    count: int
    seconds: float

    def execute(self, context: Context) -> None:
        if self.seconds < 0:
            raise TaskError(
                f"seconds must be a non-negative number, got {self.seconds}",
                code="bad-input",
                permanent=True,
            )
        context.logger.info("Submitting sleep subtasks", count=self.count, seconds=self.seconds)
        context.progress("sleeps").add_total(self.count)
        context.submit_subtasks(SleepTask(index=i, seconds=self.seconds) for i in range(self.count))


class SleepTask(Task):
    """One sleep, standing in for real work (downloading a scene, processing a tile, …)."""

    index: int
    seconds: float

    def execute(self, context: Context) -> None:
        context.set_display(f"SleepTask({self.index})")
        context.logger.info("Starting sleep task", index=self.index)
        context.sleep(self.seconds)
        context.logger.info("Finished sleep task", index=self.index)
        context.progress("sleeps").done(1)
