"""What one extraction did: `ExtractSummary` (its `to_json` is the CLI's --json output)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ExtractSummary:
    cache: str
    backbone: str
    feature_shape: tuple[int, ...]
    dtype: str
    fingerprint_hash: str
    splits: dict[str, int]
    images_extracted: int
    skipped: list[dict]
    shards_written: int
    shards_reused: int
    bytes_written: int
    cache_bytes: int
    seconds: float
    extract_seconds: float
    timing: dict[str, float]
    ignored: int
    decode: str = "exact"
    warnings: list[str] = field(default_factory=list)
    weights: dict = field(default_factory=dict)
    runtime: str = "keras"  # what ran the backbone (an "auto" request resolved)
    precision: str = "float32"
    quantization: dict | None = None  # precision int8: calibration and fidelity (quantize.py)
    # the backbone's rows per second of inference, this run's or (nothing extracted) the cache's
    backbone_images_per_second: float | None = None

    @property
    def images_per_second(self) -> float:
        return self.images_extracted / self.extract_seconds if self.extract_seconds > 0 else 0.0

    @property
    def decode_bound(self) -> bool:
        """Decoding set the pace: the backbone waited for images at least as long as it ran."""
        wait, inference = self.timing.get("wait_for_decode", 0.0), self.timing.get("inference", 0.0)
        return self.images_extracted > 0 and wait > 0.5 and wait >= inference

    def __repr__(self) -> str:
        rows = ", ".join(f"{s} {n}" for s, n in self.splits.items())
        return (f"ExtractSummary({self.cache!r}: {self.backbone} {list(self.feature_shape)}, {rows}; "
                f"{self.images_extracted} images extracted at {self.images_per_second:.1f} img/s)")

    def to_json(self) -> dict:
        return {
            "cache": self.cache,
            "backbone": self.backbone,
            "feature_shape": list(self.feature_shape),
            "dtype": self.dtype,
            "fingerprint_hash": self.fingerprint_hash,
            "rows": sum(self.splits.values()),
            "splits": self.splits,
            "images": self.images_extracted,
            "skipped": self.skipped,
            "ignored_files": self.ignored,
            "shards_written": self.shards_written,
            "shards_reused": self.shards_reused,
            "bytes_written": self.bytes_written,
            "cache_bytes": self.cache_bytes,
            "seconds": round(self.seconds, 3),
            "extract_seconds": round(self.extract_seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "timing": {k: round(v, 3) for k, v in self.timing.items()},
            "decode": self.decode,
            "decode_bound": self.decode_bound,
            "warnings": self.warnings,
            "weights": self.weights,
            "runtime": self.runtime,
            "precision": self.precision,
            **({"quantization": self.quantization} if self.quantization else {}),
            "backbone_images_per_second": self.backbone_images_per_second,
        }
