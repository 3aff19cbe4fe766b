"""Credentials from Airflow connections (AIRFLOW_CONN_<ID>, URI and JSON forms), without Airflow.

The parity of this reading with Airflow's own parser is checked in tests/test_dags.py, where
Airflow is imported (in a subprocess).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import config, connections
from pipelines.config import ConfigError, Credentials

ROOT = Path(__file__).resolve().parents[1]

BASE = """
[storage]
root = "data"

[[sources]]
name = "main-lrs"
kind = "xapi-lrs"
endpoint = "http://127.0.0.1:8200/xAPI/"
connection = "footprint_lrs"

[[sources]]
name = "plain"
kind = "xapi-lrs"
endpoint = "http://127.0.0.1:8201/xAPI/"

[reference]
roster = "roster.csv"
catalogue = "catalogue.csv"

[institution]
code = "980140000005"

[authority]
endpoint = "http://127.0.0.1:8300/isvuz/api/"
connection = "footprint_authority"
"""


@pytest.fixture
def settings(tmp_path: Path) -> config.Settings:
    p = tmp_path / "footprint.toml"
    p.write_text(BASE)
    return config.load(p)


def test_connection_uri_form_basic_credentials_url_decoded() -> None:
    c = connections.parse("x", "http://us%40er:p%3Ass%2Fw%20rd@lrs.example.kz:8443/xAPI?a=1")
    assert (c.login, c.password, c.extra, c.token) == ("us@er", "p:ss/w rd", {"a": "1"}, None)


@pytest.mark.parametrize(("value", "token"), [
    ("http://lrs.example.kz/?token=abc", "abc"),
    ("http://u:p@h/?__extra__=%7B%22token%22%3A+%22t1%22%7D", "t1"),
    ('{"conn_type": "http", "extra": {"token": "t2"}}', "t2"),
    ('{"conn_type": "http", "login": "u", "extra": "{\\"token\\": \\"t3\\"}"}', "t3"),
    ('{"conn_type": "http", "password": "only-a-secret"}', "only-a-secret"),
])
def test_connection_token_from_extra_or_lone_password(value: str, token: str) -> None:
    assert connections.parse("x", value).token == token


@pytest.mark.parametrize(("value", "message"), [
    ("", "is empty"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "neither a URI"),
    ('{"login": "u", "extra": "[1]"}', "extra must be a JSON object"),
    ("just-a-hostname", "neither a URI"),
])
def test_connection_unreadable_values_say_why(value: str, message: str) -> None:
    with pytest.raises(connections.ConnectionValueError, match=message):
        connections.parse("x", value)


def test_connection_env_name_is_airflows() -> None:
    assert connections.env_name("footprint_lrs") == "AIRFLOW_CONN_FOOTPRINT_LRS"
    assert connections.env_name("my.conn-1") == "AIRFLOW_CONN_MY.CONN-1"


def test_credentials_from_connection_uri_and_json(settings: config.Settings) -> None:
    src = settings.source("main-lrs")
    assert src.connection == "footprint_lrs"
    env = {"AIRFLOW_CONN_FOOTPRINT_LRS": "http://lms:s%3Acret@127.0.0.1:8200"}
    assert src.credentials(env) == Credentials(username="lms", password="s:cret")
    env = {"AIRFLOW_CONN_FOOTPRINT_LRS": json.dumps(
        {"conn_type": "http", "login": "lms", "password": "pw"})}
    assert src.credentials(env) == Credentials(username="lms", password="pw")
    env = {"AIRFLOW_CONN_FOOTPRINT_LRS": json.dumps({"extra": {"token": "tok"}})}
    assert src.credentials(env).header() == {"Authorization": "Bearer tok"}
    assert settings.authority is not None
    env = {"AIRFLOW_CONN_FOOTPRINT_AUTHORITY": "http://980140000005:pw@authority"}
    assert settings.authority.credentials(env) == Credentials(username="980140000005",
                                                              password="pw")


def test_credentials_footprint_variables_win_over_the_connection(
        settings: config.Settings) -> None:
    src = settings.source("main-lrs")
    env = {"AIRFLOW_CONN_FOOTPRINT_LRS": "http://conn:conn@h",
           "FOOTPRINT_SOURCE_MAIN_LRS_USERNAME": "env", "FOOTPRINT_SOURCE_MAIN_LRS_PASSWORD": "e"}
    assert src.credentials(env) == Credentials(username="env", password="e")
    env = {"AIRFLOW_CONN_FOOTPRINT_LRS": "http://conn:conn@h",
           "FOOTPRINT_SOURCE_MAIN_LRS_TOKEN": "t"}
    assert src.credentials(env) == Credentials(token="t")
    assert settings.authority is not None
    env = {"AIRFLOW_CONN_FOOTPRINT_AUTHORITY": "http://conn:conn@h",
           "FOOTPRINT_AUTHORITY_USERNAME": "u", "FOOTPRINT_AUTHORITY_PASSWORD": "p"}
    assert settings.authority.credentials(env) == Credentials(username="u", password="p")


def test_credentials_missing_everywhere_names_both_places(settings: config.Settings) -> None:
    with pytest.raises(ConfigError) as err:
        settings.source("main-lrs").credentials({})
    msg = str(err.value)
    assert "AIRFLOW_CONN_FOOTPRINT_LRS" in msg and "FOOTPRINT_SOURCE_MAIN_LRS_USERNAME" in msg
    # a source without a connection keeps the old message
    with pytest.raises(ConfigError, match="FOOTPRINT_SOURCE_PLAIN_USERNAME"):
        settings.source("plain").credentials({})


def test_credentials_bad_connection_value_never_shows_the_secret(
        settings: config.Settings) -> None:
    env = {"AIRFLOW_CONN_FOOTPRINT_LRS": '{"login": "u", "password": "hunter2", "extra": 5'}
    with pytest.raises(ConfigError) as err:
        settings.source("main-lrs").credentials(env)
    assert "footprint_lrs" in str(err.value) and "hunter2" not in str(err.value)
    env = {"AIRFLOW_CONN_FOOTPRINT_LRS": '{"conn_type": "http", "host": "h"}'}
    with pytest.raises(ConfigError, match="neither a login"):
        settings.source("main-lrs").credentials(env)


@pytest.mark.parametrize("section", ["sources", "authority"])
def test_config_connection_id_must_be_an_airflow_conn_id(tmp_path: Path, section: str) -> None:
    body = BASE.replace('connection = "footprint_lrs"' if section == "sources"
                        else 'connection = "footprint_authority"', 'connection = "no spaces"')
    p = tmp_path / "footprint.toml"
    p.write_text(body)
    key = r"sources\[0\]\.connection" if section == "sources" else r"authority\.connection"
    with pytest.raises(ConfigError, match=key + ".*not an Airflow connection id"):
        config.load(p)


def test_exported_sets_and_restores_connection_variables(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_KEEP", "http://old@h")
    monkeypatch.delenv("AIRFLOW_CONN_NEW", raising=False)
    with connections.exported({"keep": "http://new@h", "new": '{"login": "n"}'}):
        assert os.environ["AIRFLOW_CONN_KEEP"] == "http://new@h"
        assert os.environ["AIRFLOW_CONN_NEW"] == '{"login": "n"}'
    assert os.environ["AIRFLOW_CONN_KEEP"] == "http://old@h"
    assert "AIRFLOW_CONN_NEW" not in os.environ


def test_cli_reads_connections_from_environment_without_airflow(tmp_path: Path) -> None:
    """The CLI resolves a configured connection from AIRFLOW_CONN_* and never imports airflow."""
    (tmp_path / "footprint.toml").write_text(BASE)
    code = (
        "import sys\n"
        "from pipelines import config\n"
        "s = config.load(sys.argv[1])\n"
        "print(s.source('main-lrs').credentials().header()['Authorization'])\n"
        "print(s.authority.credentials().username)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'airflow'))\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FOOTPRINT_", "AIRFLOW_CONN_"))}
    env["AIRFLOW_CONN_FOOTPRINT_LRS"] = '{"conn_type": "http", "extra": {"token": "T"}}'
    env["AIRFLOW_CONN_FOOTPRINT_AUTHORITY"] = "http://980140000005:x@authority"
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "footprint.toml")],
                         env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["Bearer T", "980140000005", "[]"]
