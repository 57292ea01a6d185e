"""Engines decide only *where* planned shard tasks run.

Every engine has the same small interface, `Engine`: entered as a context
manager, `prepare(build)` returns the fingerprint and model facts of the
features it will make (building the model where it runs), and `run(tasks,
job, timing, progress)` returns the finished shards' entries in task order.
`LocalEngine` runs them in this process; `featcache.extract.dask_engine`
sends them to a Dask cluster. What a shard holds is decided by the plan and
by `run_shard`, never by the engine.
"""

from __future__ import annotations

from typing import Protocol

from ..cache import ShardInfo
from ..errors import UsageError, param
from .plan import BuildSpec, ExtractorInfo, ShardJob, ShardTask, describe_extractor
from .shard import run_shards


class Engine(Protocol):
    def __enter__(self) -> "Engine": ...

    def __exit__(self, *exc) -> bool | None: ...

    def prepare(self, build: BuildSpec) -> ExtractorInfo: ...

    def run(self, tasks: list[ShardTask], job: ShardJob, timing: dict, progress) -> list[ShardInfo]: ...


class LocalEngine:
    """Runs shard tasks in this process (the default engine)."""

    name = "local"

    def __init__(self, extractor=None):
        self.extractor = extractor

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def prepare(self, build: BuildSpec) -> ExtractorInfo:
        if self.extractor is None:
            self.extractor = build.build()
        return describe_extractor(self.extractor, build)

    def run(self, tasks, job, timing, progress) -> list[ShardInfo]:
        return list(run_shards(self.extractor, tasks, job, timing, progress))


def create_engine(options, extractor=None) -> Engine:
    """The engine `options.engine` names.

    Args:
        options: ExtractOptions (engine, scheduler, workers, retries).
        extractor: a model built earlier; only the local engine can use it.
    """
    if options.engine == "local":
        return LocalEngine(extractor)
    if extractor is not None:
        raise UsageError(f"A prebuilt extractor runs in this process only: use "
                         f"{param('engine')}=local, or let the Dask workers build their own.")
    from .dask_engine import DaskEngine

    return DaskEngine(scheduler=options.scheduler, workers=options.workers,
                      retries=options.retries)
