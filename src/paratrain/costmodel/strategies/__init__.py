"""One module per strategy, each with ``predict(inputs: StepInputs) -> Prediction``.

The map below is the only place that names strategies; the contenders
themselves come from ``paratrain.strategies.default_contenders()``.
"""

from __future__ import annotations

from types import ModuleType

MODULES = {"single": "single", "ddp": "ddp", "localsgd": "localsgd", "sparse": "sparse", "async": "async_ps",
           "hogwild": "hogwild", "fsdp": "fsdp", "zero1": "zero1", "pipeline": "pipeline", "tensor": "tensor"}
"""Registry name -> module. A strategy in the registry without an entry here has no cost model:
advise lists it as skipped (it never fails for it)."""


def modelled() -> list[str]:
    """The strategy names with a cost model."""
    return list(MODULES)


def model_for(strategy: str) -> ModuleType | None:
    """The cost model of a strategy (by its registry name), or None when there is none."""
    import importlib

    module = MODULES.get(strategy)
    return importlib.import_module(f"paratrain.costmodel.strategies.{module}") if module else None
