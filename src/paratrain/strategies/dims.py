"""The degrees of parallelism of a job: data x pipeline x tensor = world size.

Ranks are laid out with tensor innermost, then pipeline, then data (as in torchtitan):
the ranks of one tensor-parallel group are neighbours, so on a multi-host job they
share a host, where their per-layer all-reduces are cheapest.
"""

from __future__ import annotations

from dataclasses import dataclass

from paratrain.errors import ConfigError


@dataclass(frozen=True)
class ParallelDims:
    """How the world's ranks split the work.

    Example:
        >>> dims = ParallelDims(data=2, pipeline=2, tensor=1, world_size=4)
        >>> dims.coordinates(3)
        (1, 1, 0)
        >>> dims.data_rank(3), dims.pipeline_rank(3)
        (1, 1)
    """

    data: int = 1
    """Data-parallel replicas: each sees its own shard of the rows."""
    pipeline: int = 1
    """Pipeline stages: consecutive layers of the model, one stage per rank."""
    tensor: int = 1
    """Tensor-parallel degree: each linear layer's weight split over this many ranks."""
    world_size: int = 1
    """Processes in the job."""

    def __post_init__(self) -> None:
        for name in ("data", "pipeline", "tensor", "world_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"parallel degree {name}={value!r} must be an integer >= 1")
        product = self.data * self.pipeline * self.tensor
        if product != self.world_size:
            raise ConfigError(
                f"parallel degrees data={self.data} x pipeline={self.pipeline} x tensor={self.tensor} = {product} "
                f"must equal the world size {self.world_size}")

    @classmethod
    def for_world(cls, world_size: int, *, pipeline: int = 1, tensor: int = 1, what: str = "") -> "ParallelDims":
        """The dims with ``pipeline`` and ``tensor`` as given and the data degree filling the rest.

        ConfigError, naming the degrees and the world size, when they do not divide it."""
        split = pipeline * tensor
        if world_size % split:
            able = [w for w in range(split, 4 * split + 1, split)]
            raise ConfigError(
                f"{what or 'the strategy'} needs pipeline={pipeline} x tensor={tensor} = {split} ranks per "
                f"model replica, which does not divide the world size {world_size}; use workers = "
                f"{', '.join(map(str, able))}, ...")
        return cls(data=world_size // split, pipeline=pipeline, tensor=tensor, world_size=world_size)

    def coordinates(self, rank: int) -> tuple[int, int, int]:
        """(data, pipeline, tensor) coordinates of ``rank``."""
        tensor = rank % self.tensor
        pipeline = (rank // self.tensor) % self.pipeline
        return rank // (self.tensor * self.pipeline), pipeline, tensor

    def data_rank(self, rank: int) -> int:
        """Which data-parallel replica ``rank`` belongs to: ranks of one replica read the same rows."""
        return self.coordinates(rank)[0]

    def pipeline_rank(self, rank: int) -> int:
        """Which pipeline stage ``rank`` runs."""
        return self.coordinates(rank)[1]

    def tensor_rank(self, rank: int) -> int:
        """Which slice of each split layer ``rank`` holds."""
        return self.coordinates(rank)[2]

    def mesh(self, device_type: str, names: tuple[str, ...] = ("data", "pipeline", "tensor")):
        """A torch DeviceMesh over the world with one dimension per degree (needs the process group)."""
        from torch.distributed.device_mesh import init_device_mesh

        shape = {"data": self.data, "pipeline": self.pipeline, "tensor": self.tensor}
        return init_device_mesh(device_type, tuple(shape[name] for name in names), mesh_dim_names=names)
