"""Load a trained model from a run directory and predict on new data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from paratrain.data.encoding import TableEncoder
from paratrain.errors import ConfigError, DivergenceError
from paratrain.models import ModelSpec, build_model
from paratrain.train import rundir
from paratrain.train.checkpoint import load_torch


@dataclass
class TrainedModel:
    """A model with the encoding it was trained with."""

    model: torch.nn.Module
    encoder: TableEncoder
    spec: ModelSpec
    int8: Any = None
    """With ``load(..., quantized=True)``: the int8 model (paratrain.infer.Int8Model) that computes the outputs."""

    @classmethod
    def load(cls, run_dir: str | os.PathLike, quantized: bool = False) -> "TrainedModel":
        """Read ``model.pt`` from a finished run directory.

        Args:
            run_dir: The run directory.
            quantized: Predict with the int8 model that `paratrain quantize` wrote there
                (needs ``pip install 'paratrain[quant]'``).

        Example:
            >>> trained = TrainedModel.load("runs/my-run")  # doctest: +SKIP
            >>> trained.predict(pd.read_csv("new.csv"))  # doctest: +SKIP
        """
        path = Path(run_dir) / rundir.MODEL_FILE
        if not path.is_file():
            raise ConfigError(f"'{run_dir}' holds no trained model ({rundir.MODEL_FILE}); has its run finished?")
        saved: dict[str, Any] = load_torch(path)
        spec = ModelSpec.from_dict(saved["spec"])
        model = build_model(spec)
        model.load_state_dict(saved["state_dict"])
        model.eval()
        trained = cls(model, TableEncoder.from_dict(saved["encoder"]), spec)
        trained.check_finite(f"'{path}'")
        if quantized:
            from paratrain.infer.runtime import Int8Model

            trained.int8 = Int8Model.load(run_dir)
        return trained

    def check_finite(self, where: str = "the model") -> None:
        """Refuse a model with NaN or infinite parameters: every prediction would be NaN.

        Raises:
            DivergenceError: Naming the first non-finite parameter.
        """
        from paratrain.train.divergence import parameters_finite

        if parameters_finite(self.model):  # one cheap pass: estimators check before every predict
            return
        for name, tensor in self.model.state_dict().items():
            if torch.is_floating_point(tensor) and not bool(torch.isfinite(tensor).all()):
                raise DivergenceError(
                    f"{where} has non-finite parameters ({name} holds NaN or infinity): its training diverged, "
                    "and every prediction would be NaN; train it again with a lower --lr"
                )

    @property
    def task(self) -> str:
        return self.encoder.task

    def raw_outputs(self, frame: pd.DataFrame) -> np.ndarray:
        """Model outputs in encoded units: standardized targets or class logits."""
        features = self.encoder.transform_features(frame)
        if self.int8 is not None:
            return self.int8(features)
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        outputs = []
        with torch.no_grad():
            for start in range(0, len(x), 65536):
                outputs.append(self.model(x[start : start + 65536]).float())
        return torch.cat(outputs).numpy() if outputs else np.zeros((0, self.spec.n_outputs), dtype=np.float32)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predictions in the target's own units, or class labels."""
        out = self.raw_outputs(frame)
        if self.task == "classification":
            return self.encoder.inverse_target(out.argmax(axis=1))
        return self.encoder.inverse_target(out[:, 0])

    @property
    def classes(self) -> list:
        """The class labels (column order of :meth:`predict_proba`); [] for regression."""
        return list(self.encoder.classes)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Class probabilities, shape (rows, classes), columns in the order of :attr:`classes`.

        Raises:
            ConfigError: The model is a regression model.
        """
        if self.task != "classification":
            raise ConfigError("class probabilities need a classification model, but this one was trained for "
                              f"regression of '{self.encoder.options.target}'")
        # float64 softmax, so that each row sums to 1 to float64 precision.
        return torch.softmax(torch.from_numpy(self.raw_outputs(frame)).double(), dim=1).numpy()
