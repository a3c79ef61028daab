"""The known Liberty libraries are fetched the way the datasets are (issue 25, item 16): from a
pinned address, checked against their sha256, with a progress bar, into the user cache; offline
or with other bytes it is one line that says where to put the file. A local HTTP server stands
in for the repository."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest

from circuits import liberty
from circuits.liberty import KNOWN, LibertyError, find_liberty, load_liberty
from dse.cli import main
from tests.conftest import SHARED_DATA


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A folder served on loopback as the download address, and an empty user cache."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(liberty, "DOWNLOAD", f"http://127.0.0.1:{server.server_address[1]}/")
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DSE_PDK_DIR", raising=False)
    yield folder
    server.shutdown()


def nangate45() -> bytes:
    path = SHARED_DATA / "pdk" / KNOWN["nangate45"]
    if not path.is_file():
        pytest.skip(f"shared test data {path} is absent (set DSE_TEST_DATA to the data folder)")
    return path.read_bytes()


def test_a_known_library_is_downloaded_checked_and_cached(served, tmp_path, capsys):
    (served / KNOWN["nangate45"]).write_bytes(nangate45())
    path = find_liberty("nangate45")
    assert path == tmp_path / "cache" / "pdk" / KNOWN["nangate45"]
    assert path.read_bytes() == nangate45()
    assert KNOWN["nangate45"] in capsys.readouterr().err  # the progress bar names the file
    assert load_liberty("nangate45").name == "nangate45_typ.lib"
    (served / KNOWN["nangate45"]).unlink()
    assert find_liberty("nangate45") == path  # cached: no second download


def test_other_bytes_are_refused_and_nothing_is_kept(served, tmp_path):
    (served / KNOWN["nangate45"]).write_bytes(nangate45()[:-10] + b"0123456789")
    with pytest.raises(LibertyError) as err:
        find_liberty("nangate45")
    message = str(err.value)
    assert "\n" not in message and "does not match the pinned sha256" in message
    assert "put nangate45_typ.lib.gz" in message
    assert not any((tmp_path / "cache" / "pdk").iterdir())  # no partial or wrong file


def test_offline_it_is_one_line_from_the_command_line(served, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(liberty, "DOWNLOAD", "http://127.0.0.1:1/")  # nothing listens there
    assert main(["characterize", "appaxo:404750335", "--liberty", "nangate45"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("dse: error: Liberty library 'nangate45': cannot download it (")
    assert lines[-1].endswith(f"put nangate45_typ.lib.gz (from {liberty.SOURCE}) in "
                              f"$DSE_PDK_DIR or {tmp_path / 'cache' / 'pdk'}")
