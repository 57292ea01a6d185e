"""What an extraction is asked to do: `ExtractOptions`, checked before anything runs."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from ..augment_views import AugmentSpec
from ..decode import DECODES, DEFAULT_MAX_PIXELS
from ..errors import FeatcacheWarning, ParameterError, UsageError, param
from ..hardware import check_precision
from ..quantize import CALIBRATION_IMAGES
from ..runtimes import check_runtime

DTYPES = ("float32", "float16")
ENGINES = ("local", "dask")


@dataclass
class ExtractOptions:
    """Everything `featcache extract` takes; the CLI's flags are these names with dashes.

    `val_split` / `test_split` are deprecated spellings of `val_fraction` /
    `test_fraction` (a split *name* is what heads validate on).
    """

    data: str
    out: str
    backbone: str = "mobilenet"
    image_size: int | None = None
    layer: str | None = None
    pooling: str | None = None
    weights: str = "imagenet"
    weights_dir: str | None = None
    batch_size: int = 32
    dtype: str = "float32"
    precision: str = "float32"
    runtime: str = "auto"  # runtimes.resolve_runtime; a cache being resumed keeps its own
    calibration_images: int = CALIBRATION_IMAGES  # precision int8: training images NNCF calibrates on
    val_fraction: float = 0.0
    test_fraction: float = 0.0
    root: str | None = None
    allow_outside_root: bool = False
    strict: bool = False
    workers: int | None = None
    shard_size: int = 1024
    resize: str = "bilinear"
    aspect: str = "stretch"
    # None: the cache's own mode when it exists, else DEFAULT_DECODE ("fast")
    decode: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    seed: int = 0
    progress: bool | None = None
    engine: str = "local"
    scheduler: str | None = None
    retries: int = 3
    num_slices: int = 1
    slice_index: int | None = None
    augment_views: int = 0
    augment_seed: int = 0
    # deprecated spellings, accepted from Python only (the CLI has its own aliases)
    val_split: float | None = field(default=None, repr=False, metadata={"deprecated": True})
    test_split: float | None = field(default=None, repr=False, metadata={"deprecated": True})

    def __post_init__(self):
        for old, new in (("val_split", "val_fraction"), ("test_split", "test_fraction")):
            value = getattr(self, old)
            if value is not None:
                warnings.warn(f"{old} is deprecated: it is a fraction, now called {new}.",
                              FeatcacheWarning, stacklevel=3)
                setattr(self, new, float(value))
                setattr(self, old, None)

    @property
    def augment(self) -> AugmentSpec | None:
        return AugmentSpec(int(self.augment_views), int(self.augment_seed)) if self.augment_views else None

    @property
    def sliced(self) -> bool:
        return self.slice_index is not None

    def validate(self) -> None:
        """Raises ParameterError / UsageError naming the parameter."""
        for name in ("batch_size", "shard_size"):
            if int(getattr(self, name)) < 1:
                raise ParameterError(name, getattr(self, name), "must be at least 1.")
        if self.workers is not None and self.workers < 1:
            raise ParameterError("workers", self.workers, "must be at least 1.")
        check_runtime(self.runtime, allow_auto=True)
        check_precision(self.precision, None if self.runtime == "auto" else self.runtime)
        if int(self.calibration_images) < 1:
            raise ParameterError("calibration_images", self.calibration_images, "must be at least 1.")
        if self.precision == "int8" and self.engine != "local":
            raise UsageError(f"{param('precision')} int8 quantizes on this machine before "
                             f"extracting: use {param('engine')}=local.")
        if self.decode is not None and self.decode not in DECODES:
            raise ParameterError("decode", self.decode, f"allowed values are {', '.join(DECODES)}.")
        if self.dtype not in DTYPES:
            raise ParameterError("dtype", self.dtype, f"allowed values are {', '.join(DTYPES)}.")
        if self.image_size is not None and self.image_size < 1:
            raise ParameterError("image_size", self.image_size, "must be a positive number of pixels.")
        if self.engine not in ENGINES:
            raise ParameterError("engine", self.engine, f"allowed values are {', '.join(ENGINES)}.")
        if self.scheduler and self.engine != "dask":
            raise UsageError(f"{param('scheduler')} sends work to a Dask cluster: set "
                             f"{param('engine')}=dask.")
        if self.scheduler and self.workers is not None:
            raise UsageError(f"{param('workers')} starts a local Dask cluster; with "
                             f"{param('scheduler')} the cluster's own workers run the shards: "
                             "drop one of the two.")
        if self.retries < 0:
            raise ParameterError("retries", self.retries, "must be 0 or more.")
        if self.num_slices < 1:
            raise ParameterError("num_slices", self.num_slices, "must be at least 1.")
        if self.num_slices > 1 and self.slice_index is None:
            raise UsageError(f"{param('num_slices')}={self.num_slices} needs {param('slice_index')} "
                             f"(0 to {self.num_slices - 1}) naming the slice this run extracts.")
        if self.slice_index is not None and not 0 <= self.slice_index < self.num_slices:
            raise ParameterError("slice_index", self.slice_index,
                                 f"must be between 0 and {self.num_slices - 1} "
                                 f"({param('num_slices')}={self.num_slices}).")
        if self.augment_views < 0:
            raise ParameterError("augment_views", self.augment_views, "must be 0 or more.")
        if self.augment is not None:
            self.augment.validate()

    @classmethod
    def from_manifest(cls, manifest: dict, out: str, weights_dir: str | None = None,
                      weights: str | None = None, **overrides) -> "ExtractOptions":
        """The options that made a cache, read back from its manifest (to repair it).

        Args:
            weights: the weights to load; default: what the manifest recorded.
        """
        fp, source = manifest["fingerprint"], manifest["source"]
        recorded = manifest.get("weights", {})
        if weights is None:
            weights = {"none": "none", "file": recorded.get("path") or ""}.get(
                recorded.get("source"), "imagenet")
        extraction = manifest.get("extraction", {})
        augment = fp.get("augment") or {}
        values = dict(
            data=source["data"], out=out, backbone=fp["backbone"], image_size=fp["input_size"][0],
            layer=fp["layer"], pooling=fp["pooling"], weights=weights, weights_dir=weights_dir,
            batch_size=extraction.get("batch_size", 32), dtype=fp["dtype"],
            precision=fp.get("precision", "float32"),
            runtime=(fp.get("runtime") or {}).get("name", "keras"),
            calibration_images=((fp.get("runtime") or {}).get("calibration") or {}).get("images", CALIBRATION_IMAGES),
            val_fraction=source.get("val_split", 0.0), test_fraction=source.get("test_split", 0.0),
            root=source["root"] if source.get("layout") == "list" else None,
            # the plan check of a repair refuses any list that is not what it was
            allow_outside_root=source.get("layout") == "list",
            shard_size=extraction.get("shard_size", 1024), resize=fp["resize"]["method"],
            aspect=fp["resize"]["aspect"], decode=fp["resize"].get("decode", "exact"), seed=fp["weights"].get("random_seed", 0),
            augment_views=int(augment.get("views", 0)), augment_seed=int(augment.get("seed", 0)),
            progress=False)
        values.update(overrides)
        return cls(**values)
