"""A storage URL's password never reaches the terminal, study.json, saved configs or errors."""

from __future__ import annotations

import os
import subprocess

import pytest

from paratrain.tune.api import TuneResult
from paratrain.tune.study import open_storage, redact, scrub
from tests.tune.conftest import REPO, run_tune_cli, tune_cli_command

SECRET = "Pa55-w0rd-xyzzy"


@pytest.mark.parametrize("url, shown", [
    (f"postgresql://tune:{SECRET}@db-host:5432/tune", "postgresql://tune:***@db-host:5432/tune"),
    (f"postgresql://tune:{SECRET}%40x@db-host/tune", "postgresql://tune:***@db-host/tune"),
    (f"postgresql://tune:{SECRET}@x@db-host/tune", "postgresql://tune:***@db-host/tune"),
    (f"postgresql://:{SECRET}@db-host/tune", "postgresql://:***@db-host/tune"),
    (f"postgresql://tune@db-host/tune?sslmode=require&password={SECRET}",
     "postgresql://tune@db-host/tune?sslmode=require&password=***"),
    (f"mysql://tune:{SECRET}@db-host/tune?PASSWORD={SECRET};a=1", "mysql://tune:***@db-host/tune?PASSWORD=***;a=1"),
    ("postgresql://tune@db-host/tune", "postgresql://tune@db-host/tune"),
    ("/tmp/study.journal", "/tmp/study.journal"),
])
def test_redact_hides_every_form_of_password(url, shown):
    assert redact(url) == shown
    assert SECRET not in scrub(f"could not connect to {url} ({url})", url)


def test_scrub_hides_the_percent_decoded_password_too():
    url = "postgresql://tune:a%40b%3Ac@db-host/tune"
    assert scrub("driver said: password 'a@b:c' rejected for a%40b%3Ac", url) == \
        "driver said: password '***' rejected for ***"


def test_a_tune_result_does_not_print_its_storage():
    result = TuneResult(out_dir=None, study_name="s", storage=f"postgresql://u:{SECRET}@h/db", best_params=None,
                        best_value=None, best_trial=None, best_model_dir=None)
    assert SECRET not in repr(result)


def _assert_hidden(done, *, code=1):
    assert done.returncode == code, done.stderr
    assert SECRET not in done.stdout and SECRET not in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize("url", [
    f"postgresql://tune:{SECRET}@127.0.0.1:1/tune",  # port 1: nothing listens, it fails at once
    f"postgresql://tune:{SECRET}@127.0.0.1:99999999/tune",  # refused by the driver itself
    f"postgresql://tune@127.0.0.1:1/tune?password={SECRET}",
    f"sqlite://tune:{SECRET}@/not/valid.db",  # SQLAlchemy quotes this URL in its own error
])
def test_tune_on_an_unreachable_storage_shows_no_password(tmp_path, tiny_csv, url):
    done = run_tune_cli("tune", "--data", str(tiny_csv), "--target", "y", "--trials", "1", "--epochs", "1",
                        "--storage", url, "--out", str(tmp_path / "study"), timeout=100)
    _assert_hidden(done)
    assert "paratrain: error: cannot open storage" in done.stderr and "***" in done.stderr


@pytest.mark.timeout(120)
def test_tune_worker_on_an_unreachable_storage_shows_no_password(tmp_path):
    done = run_tune_cli("tune-worker", "--study", "s", "--storage", f"postgresql://tune:{SECRET}@127.0.0.1:1/tune",
                        "--wait", "1", "--out", str(tmp_path / "w"), timeout=100)
    _assert_hidden(done)


@pytest.mark.timeout(240)
def test_a_finished_search_keeps_the_password_out_of_its_files(tmp_path, tiny_csv):
    # SQLite ignores a password, so this runs anywhere; the URL still carries one, as a
    # PostgreSQL URL would, and it must not be written to study.json, configs or logs.
    out = tmp_path / "study"
    url = f"sqlite:///{tmp_path / 'study.db'}?password={SECRET}"
    done = run_tune_cli("tune", "--data", str(tiny_csv), "--target", "y", "--trials", "2", "--epochs", "1",
                        "--hidden", "8", "--storage", url, "--out", str(out))
    _assert_hidden(done, code=0)
    assert '"storage": "sqlite:///' in done.stdout and "password=***" in done.stdout
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "study.json" for p in written) and any(p.name == "config.yaml" for p in written)
    for path in [*written, tmp_path / "study.db"]:
        assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.timeout(300)
def test_a_search_on_a_real_postgres_shows_no_password(postgres_url, tmp_path, tiny_csv):
    # The test server trusts local connections, so it accepts any password: the URL carries
    # one as a production URL would, and the whole search must keep it to itself.
    scheme, _, rest = postgres_url.partition("://")
    user, _, host = rest.rpartition("@")
    url = f"{scheme}://{user}:{SECRET}@{host}"
    out = tmp_path / "study"
    done = run_tune_cli("tune", "--data", str(tiny_csv), "--target", "y", "--trials", "2", "--epochs", "1",
                        "--hidden", "8", "--storage", url, "--study-name", "secret-check", "--out", str(out))
    _assert_hidden(done, code=0)
    assert f"{user}:***@" in done.stdout and f"{user}:***@" in done.stderr
    for path in (p for p in out.rglob("*") if p.is_file()):
        assert SECRET.encode() not in path.read_bytes(), path
    import optuna

    study = optuna.load_study(study_name="secret-check", storage=open_storage(postgres_url))
    stored = repr(study.user_attrs) + "".join(repr(t.user_attrs) + repr(t.params) for t in study.get_trials())
    assert SECRET not in stored


@pytest.mark.timeout(120)
def test_the_storage_can_come_from_the_environment(tmp_path, tiny_csv):
    env = dict(os.environ, PARATRAIN_TUNE_STORAGE=f"postgresql://tune:{SECRET}@127.0.0.1:1/tune")
    for command in (["tune", "--data", str(tiny_csv), "--target", "y", "--trials", "1", "--out", str(tmp_path / "s")],
                    ["tune-worker", "--study", "s", "--wait", "1", "--out", str(tmp_path / "w")]):
        done = subprocess.run([*tune_cli_command(), *command], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=100)
        _assert_hidden(done)
        assert "cannot open storage postgresql://tune:***@127.0.0.1:1/tune" in done.stderr
