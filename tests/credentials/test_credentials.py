"""The site's credentials file: what a store gets, and every way the file can be wrong.

Secrets in these tests are distinctive strings, so a test can assert they appear
in no message.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import settings as dmg_settings
from dmg.connectors import StoreSpec, connector_for
from dmg.connectors.file import FileConnector
from dmg.connectors.sql import SqlConnector
from dmg.credentials import credential_for, load_credentials, needs_credential, open_store, redact
from dmg.errors import BadInput, DmgError, NotFound, PermissionDenied
from settings import Settings

SECRET = "s3cr3t-DO-NOT-SHOW-81f2"
S3 = StoreSpec("lake", "s3", "s3://bucket/data", {"region": "us-east-1"})
PG = StoreSpec("warehouse", "sql", "postgresql://etl@127.0.0.1:1/sales")


def write(path: Path, text: str, *, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def assert_no_secret(error: DmgError) -> None:
    assert SECRET not in str(error) and SECRET not in repr(error) and SECRET not in error.hint


@pytest.fixture
def creds(tmp_path: Path) -> Path:
    return write(tmp_path / "credentials.toml", f"""
[stores.lake]
access_key_id = "AKIAEXAMPLE"
secret_access_key = "{SECRET}"

[stores.warehouse]
username = "loader"
password = "{SECRET}"

[stores.shared-blob]
connection_string = "DefaultEndpointsProtocol=http;AccountName=a;AccountKey={SECRET};"
""")


def test_a_store_gets_its_own_entry(creds: Path) -> None:
    assert credential_for(S3, path=creds) == {"access_key_id": "AKIAEXAMPLE", "secret_access_key": SECRET}
    assert credential_for(PG, path=creds) == {"username": "loader", "password": SECRET}


def test_stores_may_share_an_entry_named_in_their_options(creds: Path) -> None:
    blob = StoreSpec("b1", "azureblob", "azureblob://c", {"credential": "shared-blob"})
    assert set(credential_for(blob, path=creds) or {}) == {"connection_string"}


@pytest.mark.parametrize("spec", [
    StoreSpec("f", "file", "/data"),
    StoreSpec("lite", "sql", "sqlite:////tmp/x.db"),
    StoreSpec("chain", "s3", "s3://b", {"credential": "none"}),
    StoreSpec("public", "azureblob", "azureblob://c", {"credential": "none"}),
])
def test_some_stores_need_no_credential_even_without_a_file(tmp_path: Path, spec: StoreSpec) -> None:
    assert not needs_credential(spec)
    assert credential_for(spec, path=tmp_path / "absent.toml") is None


def test_a_missing_file_names_the_file_and_the_store(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(NotFound) as missing:
        credential_for(S3, path=path)
    assert str(path) in missing.value.message and "'lake'" in missing.value.message
    assert "[stores.lake]" in missing.value.hint and "chmod 600" in missing.value.hint


def test_a_missing_entry_names_the_store(creds: Path) -> None:
    with pytest.raises(NotFound, match=r"store 'other' has no credential \[stores.other\]") as missing:
        credential_for(StoreSpec("other", "s3", "s3://b"), path=creds)
    assert "[stores.other]" in missing.value.hint


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_file_others_can_open_is_refused(creds: Path, mode: int) -> None:
    os.chmod(creds, mode)
    with pytest.raises(PermissionDenied) as refused:
        credential_for(S3, path=creds)
    assert f"mode {mode:04o}" in refused.value.message and f"chmod 600 {creds}" in refused.value.hint
    assert_no_secret(refused.value)


def test_owner_only_modes_are_accepted(creds: Path) -> None:
    os.chmod(creds, 0o400)
    assert credential_for(S3, path=creds) is not None


def test_a_directory_is_not_a_credentials_file(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o700)
    with pytest.raises(PermissionDenied, match="not a regular file"):
        load_credentials(tmp_path)


def test_invalid_toml_gives_the_position_not_the_text(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", f'[stores.lake]\nsecret_access_key = {SECRET}\n')
    with pytest.raises(BadInput, match=r"is not valid TOML \(at line 2, column \d+\)") as bad:
        load_credentials(path)
    assert_no_secret(bad.value)


@pytest.mark.parametrize("text,message", [
    (f'[stores.lake]\naccess_key_id = "A"\nsecret_acess_key = "{SECRET}"\n',
     "unknown key 'secret_acess_key'"),
    ('[stores.lake]\naccess_key_id = "A"\nsecret_access_key = "  "\n', "secret_access_key is empty"),
    (f'[stores.lake]\naccess_key_id = "A"\nsecret_access_key = 12\nx = "{SECRET}"\n',
     "stores.lake.secret_access_key must be a string"),
    (f'[stores.lake]\nsecret_access_key = "{SECRET}"\n', "lacks access_key_id \\+ secret_access_key"),
    (f'lake = "{SECRET}"\n', "unknown top-level key 'lake'"),
    (f'stores = "{SECRET}"\n', "'stores' must be a table"),
    (f'[stores]\nlake = "{SECRET}"\n', "stores.lake must be a table"),
    (f'[stores."bad name"]\npassword = "{SECRET}"\n', "'bad name' is not a store name"),
])
def test_malformed_entries_are_named_without_their_values(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "c.toml", text)
    with pytest.raises(BadInput, match=message) as bad:
        credential_for(S3, path=path)
    assert_no_secret(bad.value)


def test_the_loaded_file_never_shows_its_secrets(creds: Path) -> None:
    loaded = load_credentials(creds)
    assert SECRET not in repr(loaded) and "lake" in repr(loaded)


def test_open_store_hands_the_credential_to_the_connector(creds: Path) -> None:
    settings = Settings(data_dir=creds.parent)
    connector = open_store(PG, settings=settings)
    try:
        assert isinstance(connector, SqlConnector)
        assert connector.url.password == SECRET
        assert connector.url.username == "etl"  # the location's user wins over the file's
        assert SECRET not in str(connector.url)  # SQLAlchemy masks it when printed
    finally:
        connector.close()
    with pytest.raises(NotFound, match=r"credentials\.toml does not exist"):
        open_store(PG, settings=Settings(data_dir=creds.parent / "elsewhere"))


def test_open_store_opens_stores_that_need_no_credential(tmp_path: Path) -> None:
    connector = open_store(StoreSpec("f", "file", str(tmp_path)), settings=Settings(data_dir=tmp_path))
    assert isinstance(connector, FileConnector)


def test_a_file_store_refuses_a_credential(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="a file store takes no credential"):
        connector_for(StoreSpec("f", "file", str(tmp_path)), credential={"password": SECRET})


def test_the_file_comes_from_the_data_dir_or_the_setting(tmp_path: Path) -> None:
    loaded = dmg_settings.load({"DMG_DATA_DIR": str(tmp_path)})
    assert loaded.credentials_path == tmp_path / "credentials.toml"
    elsewhere = tmp_path / "secret" / "c.toml"
    loaded = dmg_settings.load({"DMG_DATA_DIR": str(tmp_path), "DMG_CREDENTIALS_FILE": str(elsewhere)})
    assert loaded.credentials_path == elsewhere


def test_redact_blanks_secret_values_only() -> None:
    credential = {"username": "loader", "password": SECRET, "account_name": "acct"}
    text = f"login loader@acct failed with {SECRET} and again {SECRET}"
    assert redact(text, credential) == "login loader@acct failed with *** and again ***"
    assert redact("abc", ["abc"]) == "abc"  # too short to be told from ordinary words
