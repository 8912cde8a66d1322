"""The study: what it stores, where it lives, and how a worker runs trials in it.

Everything a worker needs (objective, space, sampler, pruner, budget) is a
:class:`StudySpec` kept in the study's user_attrs, so that a worker on another
machine needs only the storage and the study name.

Budget: ``trials`` counts COMPLETE and PRUNED trials. A worker starts a trial
only while COMPLETE+PRUNED+RUNNING+WAITING is below it, checked and claimed
under a lock (a file lock for the journal file, an advisory lock on
PostgreSQL), so parallel workers never overshoot. A FAIL trial (a killed
worker, an error) does not count, so its budget is used again: before each
check, a RUNNING trial whose process is gone (its pid on this machine, its
heartbeat on an RDB) is failed. A trial once COMPLETE or PRUNED is final:
Optuna refuses to change a finished trial, so it is never run again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import re
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from paratrain.errors import ConfigError, ParatrainError
from paratrain.tune.locks import JournalFlock, budget_lock  # noqa: F401 - budget_lock is part of this API

SPEC_ATTR = "paratrain"
"""The study user_attr that holds the StudySpec."""
OWNER_ATTR = "worker"
"""Trial user_attr naming the process that runs it: host:pid:start-ticks:process-space (and 'worker_name':
host-coordinator pid-slot-restart, which says which search or tune-worker started it)."""
HEARTBEAT_S = 10
GRACE_S = 60
"""RDB heartbeat: a trial without a beat for this long is failed by the next worker that looks."""
COUNTED_STATES = ("COMPLETE", "PRUNED")


class TuneError(ParatrainError, RuntimeError):
    """A search cannot go on: trials keep failing, or a worker cannot start."""


@dataclass
class StudySpec:
    """What a study searches and how; JSON-friendly, stored in the study."""

    objective: dict[str, Any]
    """{'kind': 'function', 'ref': 'module:function'} or {'kind': 'model', 'model': NAME, 'fixed': {fit fields}}."""
    space: dict[str, Any]
    sampler: str = "tpe"
    pruner: str = "none"
    trials: int = 64
    objectives: tuple[str, ...] = ("value",)
    """Names of the values the objective returns; all are minimized."""
    seed: int = 0
    sampler_options: dict[str, Any] = field(default_factory=dict)
    pruner_options: dict[str, Any] = field(default_factory=dict)
    max_resource: int | None = None
    """Most epochs (pruner steps) a trial runs."""
    workers_per_trial: int = 1
    out: str | None = None
    """Study directory on the machine that created the study."""
    stop_value: float | None = None
    """Start no more trials once a COMPLETE trial's first value is at or below this."""

    IDENTITY = ("objective", "space", "objectives")
    """Fields that must match when a study is continued; the rest may change between runs."""

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["objectives"] = list(self.objectives)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "StudySpec":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        values["objectives"] = tuple(values.get("objectives", ("value",)))
        return cls(**values)

    @property
    def directions(self) -> list[str]:
        return ["minimize"] * len(self.objectives)


def is_url(ref: str) -> bool:
    return "://" in ref


def open_storage(ref: str | None) -> Any:
    """In memory (None), an RDB URL (postgresql://, sqlite:///) or a journal file path."""
    import optuna

    if ref is None:
        return optuna.storages.InMemoryStorage()
    if not is_url(ref):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(ref), lock_obj=JournalFlock(f"{ref}.flock")))
    url = ref
    if ref.startswith("postgresql://"):
        # SQLAlchemy 2.1 defaults to the psycopg 3 driver; we ship psycopg2-binary: name it.
        url = "postgresql+psycopg2://" + ref[len("postgresql://"):]
    if url.startswith("postgresql+psycopg2"):
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            raise ConfigError(f"storage {redact(ref)} needs the PostgreSQL driver: pip install psycopg2-binary") from None
    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat: 'experimental'
                # The heartbeat lets a worker on any machine fail the trials of a worker that died.
                return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                                  engine_kwargs={"pool_pre_ping": True})
        except Exception as exc:  # SQLAlchemy raises many kinds; the user needs the one line
            message = scrub(" ".join(str(exc).split()), ref)[:300]
            # On an empty database, processes that start together (a search and its tune-workers)
            # all create Optuna's tables; all but one lose that race. The winner's tables serve.
            if "already exists" in message and attempt + 1 < _SCHEMA_ATTEMPTS:
                time.sleep(0.5 * (attempt + 1))
                continue
            raise ConfigError(f"cannot open storage {redact(ref)}: {message}") from None
    raise AssertionError("unreachable")


_SCHEMA_ATTEMPTS = 4


def redact(url: str) -> str:
    """A storage URL without its password (in the user part or a ``password=`` query), for messages.

    Example:
        >>> redact("postgresql://tune:s3cret@db-host:5432/tune?password=s3cret")
        'postgresql://tune:***@db-host:5432/tune?password=***'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url  # a journal file path
    # By hand, not sqlalchemy's make_url: that refuses some URLs (a bad port, an odd
    # scheme) which must still be shown in the error that says they are wrong.
    address, question, query = rest.partition("?")
    if "@" in address:
        credentials, _, host = address.rpartition("@")  # a password may itself hold '@'
        if ":" in credentials:
            address = f"{credentials.split(':', 1)[0]}:***@{host}"
    query = _PASSWORD_QUERY.sub(r"\1***", query)
    return f"{scheme}://{address}{question}{query}"


_PASSWORD_QUERY = re.compile(r"((?:^|[?&;])password=)[^&;#]*", re.IGNORECASE)


def secrets_of(url: str | None) -> list[str]:
    """The passwords a storage URL holds, as written and percent-decoded (longest first)."""
    if not url or not is_url(url):
        return []
    from urllib.parse import unquote

    found = []
    address, _, query = url.partition("://")[2].partition("?")
    credentials = address.rpartition("@")[0]
    if ":" in credentials:
        found.append(credentials.split(":", 1)[1])
    found += [match.group(0).split("=", 1)[1] for match in _PASSWORD_QUERY.finditer(query)]
    found += [unquote(secret) for secret in found]
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def scrub(text: str, url: str | None) -> str:
    """``text`` with every password of ``url`` replaced by ``***``.

    Why: errors from SQLAlchemy, optuna or a driver may quote the URL they were given,
    and the user sees those messages in logs; the password must never be among them.
    """
    for secret in secrets_of(url):
        text = text.replace(secret, "***")
    return text


def load_spec(study: Any) -> StudySpec:
    values = study.user_attrs.get(SPEC_ATTR)
    if values is None:
        raise ConfigError(f"study '{study.study_name}' was not created by paratrain tune (no '{SPEC_ATTR}' user_attr)")
    return StudySpec.from_dict(values)


def create_or_continue(storage: Any, study_name: str, spec: StudySpec) -> Any:
    """Create the study, or continue it when its stored spec agrees with this one."""
    import optuna

    study = optuna.create_study(storage=storage, study_name=study_name, directions=spec.directions,
                                load_if_exists=True)
    stored = study.user_attrs.get(SPEC_ATTR)
    if stored is not None:
        previous = StudySpec.from_dict(stored)
        for name in StudySpec.IDENTITY:
            difference = _first_difference(getattr(previous, name), getattr(spec, name), name)
            if difference:
                raise ConfigError(f"study '{study_name}' already exists with another {difference}; continue it "
                                  "with the same settings, or choose another --out / --study-name")
    study.set_user_attr(SPEC_ATTR, spec.to_dict())
    return study


def _first_difference(old: Any, new: Any, path: str) -> str | None:
    """'objective.fixed.train.epochs: 3, now 5' for the first nested value that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            found = _first_difference(old.get(key), new.get(key), f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)) and list(old) == list(new):
        return None
    return None if old == new else f"{path}: {old!r}, now {new!r}"


def load_study(storage: Any, study_name: str, spec: StudySpec, worker: str) -> Any:
    """The study with this worker's own sampler and the study's pruner."""
    import optuna

    from paratrain.tune.samplers import build_pruner, build_sampler
    from paratrain.tune.space import SearchSpace

    sampler = build_sampler(spec.sampler, SearchSpace.from_dict(spec.space), spec.seed, len(spec.objectives),
                            spec.trials, spec.sampler_options, worker)
    pruner = build_pruner(spec.pruner, spec.max_resource, spec.pruner_options)
    return optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)


def count_states(study: Any) -> dict[str, int]:
    """Trials per state name, e.g. {'COMPLETE': 3, 'RUNNING': 1}."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def claimed(counts: dict[str, int]) -> int:
    """Trials that use budget: done (COMPLETE, PRUNED) or under way (RUNNING, WAITING)."""
    return sum(counts.get(state, 0) for state in ("COMPLETE", "PRUNED", "RUNNING", "WAITING"))


def reached(study: Any, stop_value: float | None) -> bool:
    """True when some COMPLETE trial's first value is at or below ``stop_value``."""
    if stop_value is None:
        return False
    from optuna.trial import TrialState

    return any(t.values[0] <= stop_value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def done(counts: dict[str, int]) -> int:
    return sum(counts.get(state, 0) for state in COUNTED_STATES)


# --- which process owns a trial ---------------------------------------------------------

def _proc_stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name: [state, ppid, ...]; [] if unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()
    except OSError:
        return []


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks: with the pid, names a process even after pid reuse."""
    fields = _proc_stat(pid)
    return fields[19] if len(fields) > 19 else "?"


@functools.lru_cache(maxsize=1)
def process_space() -> str:
    """Which processes this one can see: its boot of the kernel and its pid namespace, hashed.

    Why not the host name alone: two containers (or machines) may share one, and a pid
    that is free here may then be a live worker there. Network namespaces on one machine
    share it, and do see each other's pids.
    """
    parts = []
    for path, read in (("/proc/sys/kernel/random/boot_id", lambda p: Path(p).read_text().strip()),
                       ("/proc/self/ns/pid", os.readlink)):
        try:
            parts.append(read(path))
        except OSError:
            parts.append("")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def owner_tag(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}:{process_space()}"


def owner_alive(tag: str) -> bool | None:
    """True/False for a process on this host; None when it runs elsewhere (we cannot tell)."""
    host, _, rest = tag.partition(":")
    pid_text, _, rest = rest.partition(":")
    ticks, _, space = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit() or space not in ("", process_space()):
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _proc_stat(pid)
    if fields and fields[0] in ("Z", "X"):  # a zombie: killed, not yet reaped by its (dead) parent's heir
        return False
    return ticks in ("?", _start_ticks(pid))


def fail_dead_trials(study: Any, dead_pids: set[int] | None = None, lock: Any = None,
                     unowned_after_s: float = 120.0, lock_held: bool = False) -> list[int]:
    """Mark FAIL the RUNNING trials whose process on this host is gone; returns their numbers.

    ``dead_pids``: processes known to be dead (a worker we saw exit). Trials owned by another
    host are left to that host (or, on an RDB, to the heartbeat). A trial with no owner yet
    was created by a worker holding the budget lock, which names the owner before letting
    go: so if ``lock`` (the budget lock) can be taken, such a trial's worker died inside
    ``ask()``. Without a lock (or with one that excludes nobody), an unowned trial is failed
    after ``unowned_after_s``. ``lock_held``: the caller holds ``lock`` already.
    """
    from optuna.trial import TrialState

    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tag = trial.user_attrs.get(OWNER_ATTR)
        if tag is None:
            continue
        pid = int(tag.split(":")[1]) if tag.split(":")[1].isdigit() else -1
        alive = owner_alive(tag)
        if alive is False or (dead_pids is not None and pid in dead_pids and alive is not None):
            failed += _fail(study, trial, f"worker {tag} died")
    unowned = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
               if OWNER_ATTR not in t.user_attrs]
    if not unowned:
        return failed
    if lock is None or not getattr(lock, "exclusive", True):
        old = [t for t in unowned if t.datetime_start and time.time() - t.datetime_start.timestamp() > unowned_after_s]
        for trial in old:
            failed += _fail(study, trial, "its worker died before naming itself")
        return failed
    if not lock_held:
        lock.acquire()
    try:
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if OWNER_ATTR not in trial.user_attrs:
                failed += _fail(study, trial, "its worker died before naming itself")
    finally:
        if not lock_held:
            lock.release()
    return failed


def trials_failed_with(study: Any, pid: int) -> list[int]:
    """The trials of process ``pid`` on this machine that were failed because it died (by anyone)."""
    from optuna.trial import TrialState

    numbers = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        tag = trial.user_attrs.get(OWNER_ATTR, "")
        if tag.split(":")[1:2] == [str(pid)] and owner_alive(tag) is False and "failed_because" in trial.user_attrs:
            numbers.append(trial.number)
    return numbers


def fail_abandoned_trials(study: Any, lock: Any) -> list[int]:
    """With the budget lock held: fail the RUNNING trials nobody works on any more; their numbers.

    Why before every budget check: a RUNNING trial claims budget. One left by a process
    killed on this machine (its pid is gone) or on another (no heartbeat within the grace
    period, on an RDB) would otherwise hold its claim for ever, and the workers that remain
    would stop one trial short of the budget instead of running it again.
    """
    fail_stale_rdb_trials(study)  # a no-op without a heartbeat (the journal file: one machine)
    return fail_dead_trials(study, lock=lock, lock_held=True)


def _fail(study: Any, trial: Any, reason: str) -> list[int]:
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        study._storage.set_trial_user_attr(trial._trial_id, "failed_because", reason)
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        return [trial.number]
    except UpdateFinishedTrialError:  # it finished after all, or another process failed it first
        return []


def fail_stale_rdb_trials(study: Any) -> None:
    """Optuna's heartbeat check: RUNNING trials on an RDB whose worker stopped beating become FAIL."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


# --- one worker's loop -------------------------------------------------------------------

def _finished_by_another(study: Any, trial: Any) -> bool:
    return study._storage.get_trial(trial._trial_id).state.is_finished()


class _NoTracebackForInterrupts(logging.Filter):
    """Optuna logs a trial that ends by an exception with its traceback. A trial stopped by
    Ctrl-C or SIGTERM (the user's, or the coordinator stopping its workers) is no bug:
    keep the one-line 'Trial N failed' record, drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_interrupted_trials() -> None:
    logger = logging.getLogger("optuna.study._optimize")  # where Optuna logs failed trials
    if not any(isinstance(f, _NoTracebackForInterrupts) for f in logger.filters):
        logger.addFilter(_NoTracebackForInterrupts())


def run_trials(study: Any, spec: StudySpec, objective: Callable[[dict, Any], Any], lock: Any,
               on_trial_end: Callable[[Any], None] | None = None, max_failures_in_a_row: int = 3,
               worker_name: str | None = None) -> None:
    """Run trials until the budget is claimed; raise TuneError after repeated failures.

    The lock is taken before asking for a trial and released by the objective as soon as
    the new trial is RUNNING (so it counts): checking the budget and claiming it are one step.
    """
    import optuna

    from paratrain.tune.space import SearchSpace

    space = SearchSpace.from_dict(spec.space)
    _quiet_interrupted_trials()
    tag = owner_tag()
    started: list[Any] = []  # this round's trial (as soon as it exists)
    finished: list[Any] = []  # every trial told, in order

    def wrapped(trial: Any) -> Any:
        started.append(trial)
        # Owner first, then the lock: a RUNNING trial without an owner can only be one whose
        # process died inside ask() (see fail_dead_trials).
        trial.set_user_attr(OWNER_ATTR, tag)
        if worker_name:
            trial.set_user_attr("worker_name", worker_name)
        lock.release()
        params = space.suggest(trial)
        try:
            return objective(params, trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500])
            raise

    def remember(study: Any, trial: Any) -> None:
        finished.append(trial)
        if on_trial_end is not None:
            on_trial_end(trial)

    failures = 0
    while True:
        lock.acquire()
        try:
            fail_abandoned_trials(study, lock)
            if claimed(count_states(study)) >= spec.trials or reached(study, spec.stop_value):
                return
            started.clear()
            told_before = len(finished)
            try:
                study.optimize(wrapped, n_trials=1, catch=(Exception,), callbacks=[remember])
            except Exception:
                if not started or len(finished) > told_before or not _finished_by_another(study, started[-1]):
                    raise
                # Another worker failed this trial while it ran (its heartbeat looked stale), and
                # Optuna refused our tell: it stays FAIL and its budget is run again, so that
                # its result counts nowhere rather than twice.
                print(f"paratrain tune worker: trial {started[-1].number} was failed by another worker while it "
                      "ran; its result is dropped, its budget is used again", file=sys.stderr, flush=True)
        finally:
            lock.release()
        if len(finished) == told_before:
            continue  # no trial, or one whose result was dropped: not this worker's failure
        last = finished[-1]
        failures = failures + 1 if last.state.name == "FAIL" else 0
        if failures >= max_failures_in_a_row:
            error = last.user_attrs.get("error", "no error message")
            raise TuneError(f"{failures} trials in a row failed; the last, trial {last.number}, with {error}")
