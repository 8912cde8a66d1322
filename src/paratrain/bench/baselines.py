"""The baselines paratrain is measured against, written the way a user would write them.

* :func:`plain_torch_epoch_seconds`: the textbook PyTorch loop (randperm once per
  epoch, contiguous slices, zero_grad / forward / backward / step) and nothing else.
* :func:`sklearn_time_to_target`: scikit-learn's ``MLPRegressor`` trained one epoch
  at a time with ``partial_fit``, scored on the test rows after each epoch.

Both take data already split and standardized by :func:`standardized_split`, with
the training statistics, as paratrain's encoder does (mean and population std).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from paratrain.bench.results import TargetRun


@dataclass
class SplitData:
    """Standardized float32 features and target, split into training and test rows."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def standardized_split(frame: pd.DataFrame, target: str, train_idx: np.ndarray, test_idx: np.ndarray) -> SplitData:
    """Scale features and target to mean 0, std 1 with the training rows' statistics.

    Example:
        >>> frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "y": [1.0, 2.0, 3.0, 4.0]})
        >>> split = standardized_split(frame, "y", np.array([0, 1, 2]), np.array([3]))
        >>> split.x_train.shape, split.x_test.shape
        ((3, 1), (1, 1))
    """
    x = frame.drop(columns=[target]).to_numpy(dtype=np.float64)
    y = frame[target].to_numpy(dtype=np.float64)
    x_mean, x_std = x[train_idx].mean(axis=0), x[train_idx].std(axis=0)
    x_std[x_std == 0] = 1.0
    y_mean, y_std = y[train_idx].mean(), y[train_idx].std() or 1.0

    def scaled_x(rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((x[rows] - x_mean) / x_std, dtype=np.float32)

    def scaled_y(rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((y[rows] - y_mean) / y_std, dtype=np.float32)

    return SplitData(scaled_x(train_idx), scaled_y(train_idx), scaled_x(test_idx), scaled_y(test_idx))


def plain_mlp(n_inputs: int, hidden: Sequence[int]) -> torch.nn.Sequential:
    """Linear-ReLU-...-Linear(…, 1): the same layers, in the same order, as paratrain's MLP."""
    layers: list[torch.nn.Module] = []
    width = n_inputs
    for size in hidden:
        layers += [torch.nn.Linear(width, size), torch.nn.ReLU()]
        width = size
    layers.append(torch.nn.Linear(width, 1))
    return torch.nn.Sequential(*layers)


def plain_torch_epoch_seconds(
    x: np.ndarray, y: np.ndarray, *, hidden: Sequence[int], batch_size: int, lr: float,
    epochs: int, seed: int, threads: int,
) -> list[float]:
    """Train the plain loop for ``epochs`` epochs; return the seconds of each epoch.

    The timed region is the same as paratrain's ``train_seconds``: the shuffle
    (one randperm and gather per epoch) and every optimizer step; nothing else.

    Example:
        >>> x, y = np.zeros((64, 3), np.float32), np.zeros(64, np.float32)
        >>> len(plain_torch_epoch_seconds(x, y, hidden=(8,), batch_size=16, lr=1e-3,
        ...                               epochs=2, seed=0, threads=1))
        2
    """
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = plain_mlp(x.shape[1], hidden)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        x_all, y_all = torch.from_numpy(x), torch.from_numpy(y)
        generator = torch.Generator().manual_seed(seed)
        seconds = []
        for _ in range(epochs):
            started = time.perf_counter()
            order = torch.randperm(len(x_all), generator=generator)
            xs, ys = x_all[order], y_all[order]
            for start in range(0, len(xs), batch_size):
                optimizer.zero_grad(set_to_none=True)
                out = model(xs[start : start + batch_size])
                loss = torch.nn.functional.mse_loss(out.squeeze(-1), ys[start : start + batch_size])
                loss.backward()
                optimizer.step()
            seconds.append(time.perf_counter() - started)
        return seconds
    finally:
        torch.set_num_threads(threads_before)


def sklearn_time_to_target(
    split: SplitData, *, hidden: Sequence[int], batch_size: int, lr: float, seed: int, threads: int,
    target_r2: float, max_epochs: int, progress: Callable[[str], None] = lambda line: None,
    dtype: str = "float64",
) -> TargetRun:
    """``MLPRegressor.partial_fit`` one epoch at a time until the test R² reaches ``target_r2``.

    Only the ``partial_fit`` calls are timed; scoring after each epoch is not. The
    numpy BLAS (and OpenMP) pools are limited to ``threads`` with threadpoolctl.
    ``alpha=0`` because paratrain's run has no weight decay either.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor
    from threadpoolctl import threadpool_limits

    estimator = MLPRegressor(
        hidden_layer_sizes=tuple(hidden), activation="relu", solver="adam", alpha=0.0,
        batch_size=batch_size, learning_rate_init=lr, shuffle=True, random_state=seed,
    )
    # sklearn computes in the dtype it is given; float64 is what users' arrays usually are.
    x_train, y_train = split.x_train.astype(dtype), split.y_train.astype(dtype)
    x_test, y_test = split.x_test.astype(dtype), split.y_test.astype(dtype)
    run = TargetRun(target_r2=target_r2)
    started_run = time.perf_counter()
    with threadpool_limits(limits=threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for epoch in range(1, max_epochs + 1):
            started = time.perf_counter()
            estimator.partial_fit(x_train, y_train)
            seconds = time.perf_counter() - started
            r2 = float(estimator.score(x_test, y_test))
            run.r2_by_epoch.append(r2)
            run.seconds_by_epoch.append(seconds)
            run.train_seconds_by_epoch.append(seconds)
            progress(f"sklearn epoch {epoch}: test_r2={r2:.4f} seconds={seconds:.2f}")
            if r2 >= target_r2:
                break
    run.wall_seconds = time.perf_counter() - started_run
    return run
