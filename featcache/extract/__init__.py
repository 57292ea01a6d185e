"""Extraction: run a frozen backbone over images once and store the features in a cache.

- `options`: `ExtractOptions`, what an extraction is asked to do.
- `plan`: pure planning (shard tasks, slices, `BuildSpec`, `ShardJob`).
- `shard`: `run_shard` / `run_shards`, one planned shard into one finished shard file.
- `engines`: where tasks run (`LocalEngine`; `dask_engine.DaskEngine` on a cluster).
- `run`: `extract`, the whole job; `merge`: joining the slices of a sliced run.
- `summary`: `ExtractSummary`.
"""

from .options import DTYPES, ENGINES, ExtractOptions
from .plan import BuildSpec, ExtractorInfo, ShardJob, ShardTask, describe_extractor, plan_shards, slice_tasks
from .run import extract
from .shard import run_shard, run_shards
from .summary import ExtractSummary

__all__ = [
    "BuildSpec", "DTYPES", "ENGINES", "ExtractOptions", "ExtractSummary", "ExtractorInfo",
    "ShardJob", "ShardTask", "describe_extractor", "extract", "plan_shards", "run_shard",
    "run_shards", "slice_tasks",
]
