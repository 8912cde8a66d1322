"""What `paratrain calibrate` measured, as one JSON file: load, save, and the model's fingerprint.

A calibration belongs to one model at one batch size (compute per step is the
model's own); the fingerprint says which, so that a file calibrated for another
model is refused instead of silently predicting the wrong compute time.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from paratrain.errors import ConfigError

VERSION = 1


@dataclass(frozen=True)
class Fingerprint:
    """What makes compute per step this model's: its layer widths, parameters and batch size."""

    layers: tuple[int, ...]
    """Input width, hidden widths, output width (an MLP); a formula model lists its parameter count."""
    parameters: int
    batch_size: int
    model: str = "mlp"

    def describe(self) -> str:
        widths = "-".join(str(w) for w in self.layers)
        return f"{self.model} {widths} ({self.parameters:,} parameters, batch {self.batch_size})"

    def to_dict(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "parameters": self.parameters, "batch_size": self.batch_size,
                "model": self.model}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Fingerprint":
        return cls(tuple(int(w) for w in values["layers"]), int(values["parameters"]), int(values["batch_size"]),
                   str(values.get("model", "mlp")))


@dataclass(frozen=True)
class CollectiveFit:
    """t = a·alpha + b·n·beta for one collective on one link (a, b from the algorithm and p)."""

    alpha_s: float
    beta_s_per_byte: float
    points: tuple[tuple[int, int, float], ...] = ()
    """(workers, message bytes, median seconds) that were measured."""

    def to_dict(self) -> dict[str, Any]:
        return {"alpha_s": self.alpha_s, "beta_s_per_byte": self.beta_s_per_byte,
                "points": [list(point) for point in self.points]}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "CollectiveFit":
        return cls(float(values["alpha_s"]), float(values["beta_s_per_byte"]),
                   tuple((int(p), int(n), float(t)) for p, n, t in values.get("points", ())))


@dataclass(frozen=True)
class ComputeProfile:
    """One worker's step costs while ``workers`` workers run at once on this machine."""

    workers: int
    threads: int
    step_s: float
    """Forward + backward + optimizer step at the calibrated batch size."""
    forward_backward_s: float
    optimizer_s: float
    per_sample_s: float
    """Slope of forward + backward over two batch sizes."""
    ddp_overhead_s: float | None = None
    """The DDP wrapper's own cost per step: a DDP step without communication minus compute."""
    ddp_step_s: float | None = None
    ddp_nocomm_step_s: float | None = None
    """A DDP step whose hook returns the bucket at once: the wrapper's cost without communication."""
    comm_inflation: float | None = None
    """How much longer gloo's collectives take while the workers compute on the same cores than
    when timed alone: (DDP step - DDP step without communication) / modelled all-reduce, >= 1."""
    topk_encode_s: float | None = None
    """Top-k selection (ratio 0.01) and error feedback on the model's flat gradient."""
    topk_decode_fixed_s: float | None = None
    """Decoding's cost whatever the ranks: a dense zero vector of the gradient's size."""
    topk_decode_per_rank_s: float | None = None
    """Adding one rank's (index, value) pairs back into a dense gradient."""
    powersgd_compute_s: float | None = None
    """PowerSGD's matrix products, orthogonalization and error feedback (rank 4)."""
    strategy_step_s: dict[str, float] = field(default_factory=dict)
    """Each contender's real step through the training loop on loopback (strategy_steps.py)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ComputeProfile":
        names = {f for f in cls.__dataclass_fields__}
        kept = {k: v for k, v in values.items() if k in names}
        kept["strategy_step_s"] = {str(k): float(v) for k, v in (kept.get("strategy_step_s") or {}).items()}
        return cls(**kept)


@dataclass
class Calibration:
    """Everything the cost model reads: collectives per link, compute per worker count, memory."""

    fingerprint: Fingerprint
    cores: int
    collectives: dict[str, dict[str, CollectiveFit]] = field(default_factory=dict)
    """link name -> collective name (all_reduce, all_gather, broadcast, p2p) -> fit."""
    compute: dict[int, ComputeProfile] = field(default_factory=dict)
    """workers running at once on this machine -> one worker's costs."""
    memory: dict[str, float] = field(default_factory=dict)
    """Bytes: parameters, gradients, optimizer_state, activations, process_rss."""
    optimizer: str = "adam"
    measured: list[str] = field(default_factory=list)
    """What was measured, in words (sizes, repeats, links, worker counts), and what was trimmed."""
    elapsed_s: float = 0.0
    budget_s: float = 60.0
    source: str = "calibrate"
    """'calibrate' (processes on this machine) or 'probe' (a quick in-process compute probe only)."""

    @property
    def parameters(self) -> int:
        return self.fingerprint.parameters

    @property
    def batch_size(self) -> int:
        return self.fingerprint.batch_size

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION, "source": self.source, "fingerprint": self.fingerprint.to_dict(),
            "cores": self.cores, "optimizer": self.optimizer,
            "collectives": {link: {name: fit.to_dict() for name, fit in fits.items()}
                            for link, fits in self.collectives.items()},
            "compute": {str(p): profile.to_dict() for p, profile in sorted(self.compute.items())},
            "memory": dict(self.memory), "measured": list(self.measured),
            "elapsed_s": self.elapsed_s, "budget_s": self.budget_s,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Calibration":
        return cls(
            fingerprint=Fingerprint.from_dict(values["fingerprint"]), cores=int(values["cores"]),
            collectives={link: {name: CollectiveFit.from_dict(fit) for name, fit in fits.items()}
                         for link, fits in values.get("collectives", {}).items()},
            compute={int(p): ComputeProfile.from_dict(profile) for p, profile in values.get("compute", {}).items()},
            memory={k: float(v) for k, v in values.get("memory", {}).items()},
            optimizer=str(values.get("optimizer", "adam")), measured=list(values.get("measured", [])),
            elapsed_s=float(values.get("elapsed_s", 0.0)), budget_s=float(values.get("budget_s", 60.0)),
            source=str(values.get("source", "calibrate")),
        )

    def save(self, path: str | Path) -> None:
        """Write the JSON atomically (a reader never sees half a file)."""
        from paratrain.train.checkpoint import save_json_atomic

        save_json_atomic(self.to_dict(), path)

    def check_model(self, fingerprint: Fingerprint, path: str | Path = "calibration") -> None:
        """ConfigError when this calibration was made for another model or batch size."""
        if fingerprint != self.fingerprint:
            raise ConfigError(f"calibration={str(path)!r} was measured for {self.fingerprint.describe()}, "
                              f"but this run trains {fingerprint.describe()}; run `paratrain calibrate` for it")


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file; ConfigError (one line naming the file) when it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"calibration={str(path)!r} does not exist; write one with `paratrain calibrate --out {path}`")
    try:
        values = json.loads(path.read_text())
        if int(values.get("version", 0)) != VERSION:
            raise ValueError(f"version {values.get('version')!r}, expected {VERSION}")
        return Calibration.from_dict(values)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"calibration={str(path)!r} is not a paratrain calibration file ({exc})") from None
