from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from pipelines import config
from pipelines.config import ConfigError

MINIMAL = """
[storage]
root = "data"

[state]
url = "sqlite:///data/state.db"

[[sources]]
name = "main-lrs"
kind = "xapi-lrs"
endpoint = "http://127.0.0.1:8200/xAPI/"
"""


def test_config_minimal_file_as_written_resolves_relative_to_file(tmp_path: Path) -> None:
    p = tmp_path / "footprint.toml"
    p.write_text(MINIMAL)
    s = config.load(p)
    assert s.storage_root == (tmp_path / "data").resolve()
    assert s.state_url == f"sqlite:///{(tmp_path / 'data' / 'state.db').resolve()}"
    src = s.source("main-lrs")
    assert src.endpoint == "http://127.0.0.1:8200/xAPI/"
    assert src.xapi_version == "1.0.3" and src.page_size == 500
    assert src.lookback == timedelta(minutes=15)


def test_config_credentials_from_environment_only(tmp_path: Path) -> None:
    p = tmp_path / "footprint.toml"
    p.write_text(MINIMAL)
    src = config.load(p).source("main-lrs")
    assert src.env_prefix == "FOOTPRINT_SOURCE_MAIN_LRS_"
    creds = src.credentials({"FOOTPRINT_SOURCE_MAIN_LRS_USERNAME": "u",
                             "FOOTPRINT_SOURCE_MAIN_LRS_PASSWORD": "p"})
    assert creds.header() == {"Authorization": "Basic dTpw"}
    assert src.credentials({"FOOTPRINT_SOURCE_MAIN_LRS_TOKEN": "t"}).header() == {
        "Authorization": "Bearer t"}
    with pytest.raises(ConfigError, match="FOOTPRINT_SOURCE_MAIN_LRS_USERNAME"):
        src.credentials({})


def test_config_secret_keys_in_file_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "footprint.toml"
    p.write_text(MINIMAL + 'password = "hunter2"\n')
    with pytest.raises(ConfigError, match=r"sources\[0\]: unknown key `password`"):
        config.load(p)


@pytest.mark.parametrize(("extra", "message"), [
    ("page_size = 'many'", r"sources\[0\]\.page_size: Expected `int`, got `str`"),
    ("page_size = 0", r"sources\[0\]\.page_size: 0 must be between 1 and 10000"),
    ("lookback = 'ten minutes'", r"sources\[0\]\.lookback: 'ten minutes' is not an ISO 8601"),
    ("xapi_version = '0.95'", r"sources\[0\]\.xapi_version: '0.95' is not one of"),
    ("kind = 'ftp'", r"sources\[0\]\.kind: Invalid enum value 'ftp'"),
])
def test_config_invalid_value_names_key(tmp_path: Path, extra: str, message: str) -> None:
    body = MINIMAL.replace('kind = "xapi-lrs"\n', "") + extra + "\n"
    if "kind" not in extra:
        body += 'kind = "xapi-lrs"\n'
    p = tmp_path / "footprint.toml"
    p.write_text(body)
    with pytest.raises(ConfigError, match=message):
        config.load(p)


def test_config_missing_endpoint_and_duplicate_names(tmp_path: Path) -> None:
    p = tmp_path / "footprint.toml"
    p.write_text('[[sources]]\nname = "a"\nkind = "xapi-lrs"\n')
    with pytest.raises(ConfigError, match=r"sources\[0\]\.endpoint: required"):
        config.load(p)
    p.write_text('[[sources]]\nname = "a"\nkind = "xapi-file"\npath = "x"\n'
                 '[[sources]]\nname = "a"\nkind = "xapi-file"\npath = "y"\n')
    with pytest.raises(ConfigError, match=r"sources\[1\]\.name: 'a' is used"):
        config.load(p)


def test_config_not_found_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FOOTPRINT_CONFIG", raising=False)
    with pytest.raises(ConfigError, match=r"create footprint\.toml"):
        config.load()
    monkeypatch.setenv("FOOTPRINT_CONFIG", str(tmp_path / "elsewhere.toml"))
    with pytest.raises(ConfigError, match="cannot read"):
        config.load()


def test_parse_duration() -> None:
    assert config.parse_duration("PT15M") == timedelta(minutes=15)
    assert config.parse_duration("P1DT2H") == timedelta(days=1, hours=2)
    assert config.parse_duration(90) == timedelta(seconds=90)
    for bad in ("P", "PT", "15m", "P1Y"):
        with pytest.raises(ValueError):
            config.parse_duration(bad)


def test_config_tolerate_profiles_per_source() -> None:
    s = config.loads(MINIMAL)
    assert s.source("main-lrs").tolerate == ()
    s = config.loads(MINIMAL + 'tolerate = ["openedx"]\n')
    assert s.source("main-lrs").tolerate == ("openedx",)
    with pytest.raises(ConfigError, match=r"sources\[0\]\.tolerate: 'edx' is not a tolerance "
                       r"profile; known: openedx"):
        config.loads(MINIMAL + 'tolerate = ["edx"]\n')
    with pytest.raises(ConfigError, match=r"sources\[0\]\.tolerate: a profile is listed twice"):
        config.loads(MINIMAL + 'tolerate = ["openedx", "openedx"]\n')
    with pytest.raises(ConfigError, match=r"sources\[0\]\.tolerate"):
        config.loads(MINIMAL + 'tolerate = "openedx"\n')


DELIVERY = MINIMAL + (
    '[reference]\nroster = "r.csv"\ncatalogue = "c.csv"\n'
    '[institution]\ncode = "980140000005"\n'
    '[authority]\nendpoint = "http://127.0.0.1:8300/isvuz/api"\n'
)


def test_config_delivery_sections(tmp_path: Path) -> None:
    s = config.loads(DELIVERY, tmp_path / "footprint.toml")
    code, a = s.delivery()
    assert code == "980140000005"
    assert a.endpoint == "http://127.0.0.1:8300/isvuz/api/" and a.entity == "ONLINE_LEARNING"
    assert a.verify_tls and a.gzip and a.readback and a.batch_size == 500
    creds = a.credentials({"FOOTPRINT_AUTHORITY_USERNAME": "980140000005",
                           "FOOTPRINT_AUTHORITY_PASSWORD": "p"})
    assert creds.header()["Authorization"].startswith("Basic ")
    assert a.credentials({"FOOTPRINT_AUTHORITY_TOKEN": "t"}).header() == {
        "Authorization": "Bearer t"}
    with pytest.raises(ConfigError, match="FOOTPRINT_AUTHORITY_USERNAME"):
        a.credentials({})


@pytest.mark.parametrize(("section", "message"), [
    ('[institution]\ncode = "980140000006"\n', "institution.code: '980140000006' is not a BIN"),
    ('[institution]\ncode = "98014000000"\n', "is not a BIN"),
    ('[authority]\nendpoint = "ftp://x"\n', "authority.endpoint"),
    ('[authority]\nendpoint = "http://x/"\nbatch_size = 0\n', "authority.batch_size"),
    ('[authority]\nendpoint = "http://x/"\nfind_by_id_path = "org-data/find"\n',
     "authority.find_by_id_path"),
    ('[authority]\nendpoint = "http://x/"\npassword = "p"\n', "password"),
])
def test_config_delivery_errors_name_the_key(tmp_path: Path, section: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        config.loads(MINIMAL + section, tmp_path / "footprint.toml")


def test_config_delivery_needs_every_section(tmp_path: Path) -> None:
    s = config.loads(MINIMAL, tmp_path / "footprint.toml")
    with pytest.raises(ConfigError, match=re.escape(
            "reference.roster, reference.catalogue, institution.code, authority.endpoint")):
        s.delivery()
