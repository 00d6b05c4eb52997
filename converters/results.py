"""What an export reports: one row per format (status, file, size, ops, cosine, accuracy) and the whole run.

Plain data: ``edgeface export`` prints these (its table, ``--json``); the steps fill them in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # plain data: no numpy or interpreter for the report itself
    from edgeface.converters.verify import CosineCheck

OK, FAILED_VERIFICATION, FAILED = "ok", "failed_verification", "failed"
STATUS_SYMBOL = {OK: "✅", FAILED_VERIFICATION: "❎", FAILED: "❌"}


@dataclass
class FormatResult:
    """One row of the summary table."""

    format: str
    status: str = FAILED
    file: Optional[str] = None
    size_bytes: int = 0
    ops: dict = field(default_factory=dict)
    cosine: Optional[CosineCheck] = None
    accuracy: Optional[float] = None
    accuracy_drop_pt: Optional[float] = None
    threshold_at_far: Optional[float] = None
    seconds: float = 0.0
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def symbol(self) -> str:
        return STATUS_SYMBOL[self.status]

    @property
    def ops_total(self) -> int:
        return sum(self.ops.values())

    def to_dict(self) -> dict:
        return {
            "format": self.format, "status": self.status, "file": self.file, "size_bytes": self.size_bytes,
            "size_mb": round(self.size_bytes / 1e6, 3), "ops_total": self.ops_total, "ops": self.ops,
            "cosine_min": self.cosine.cosine_min if self.cosine else None,
            "cosine_mean": self.cosine.cosine_mean if self.cosine else None,
            "cosine_bound": self.cosine.bound if self.cosine else None,
            "cosine_mean_bound": self.cosine.mean_bound if self.cosine else None,
            "score_max_diff": self.cosine.score_max_diff if self.cosine else None,
            "accuracy": self.accuracy, "accuracy_drop_pt": self.accuracy_drop_pt,
            "threshold_at_far": self.threshold_at_far, "seconds": round(self.seconds, 2),
            "error": self.error or None, "notes": self.notes,
        }


@dataclass
class ExportResult:
    bundle: Path
    formats: list[FormatResult]
    float_accuracy: Optional[float]
    threshold: dict
    calibration: dict
    edgetpu: Optional[dict] = None
    mixed: Optional[dict] = None
    notes: list[str] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)

    @property
    def all_ok(self) -> bool:
        return all(r.status == OK for r in self.formats)

    def to_dict(self) -> dict:
        return {"bundle": str(self.bundle), "float_accuracy": self.float_accuracy,
                "formats": [r.to_dict() for r in self.formats], "threshold": self.threshold,
                "calibration": self.calibration, "edgetpu": self.edgetpu, "mixed": self.mixed, "notes": self.notes}
