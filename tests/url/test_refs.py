"""What the ``url`` source refuses before any network call, and how it reads names."""

from __future__ import annotations

import pytest

from modelpull import DownloadStatus
from modelpull.api import check_download
from modelpull.errors import InvalidModel, InvalidOption, UnsafeSource
from modelpull.providers.url import check_file_name, disposition_filename, name_of, parse_url_ref
from tests.url.conftest import collect

SHA = "ab" * 32


@pytest.mark.parametrize(
    "model",
    [
        "", "   ", "model.gguf", "org/repo", "ftp://host/model.gguf", "file:///etc/passwd",
        "http:///model.gguf", "http://host:99999/model.gguf", "http://host:port/x",
        "http://host/a model.gguf", "http://host/a\tmodel.gguf", "http://host/\x00.gguf",
        "http://host/model.gguf#frag", "http://host/model.gguf#sha256=1234",
        "https://host/" + "a" * 9000,
    ],
)
async def test_an_invalid_url_is_invalid_model_with_no_network(model: str) -> None:
    with pytest.raises(InvalidModel):
        check_download("url", model)
    events, _ = await collect(model)  # no server anywhere: a network call would fail otherwise
    assert [e.status for e in events] == [DownloadStatus.STARTING, DownloadStatus.ERROR]
    assert events[-1].error_code == "invalid_model", events[-1].message


async def test_credentials_in_the_url_are_refused_without_showing_them() -> None:
    events, _ = await collect("https://someone:hunter2secret@host.example/model.gguf")
    assert events[-1].error_code == "invalid_model"
    assert "--token" in events[-1].message
    assert "hunter2secret" not in events[-1].message


@pytest.mark.parametrize(
    ("options", "base_url"),
    [
        ({"sha256": "xyz"}, None),
        ({"sha256": SHA[:-2]}, None),
        ({"sha256": "cd" * 32, "_fragment": True}, None),
        ({"local_dir": 42}, None),
        ({"revision": "main"}, None),
        ({}, "http://127.0.0.1:9"),
    ],
)
def test_bad_options_are_invalid_option(options: dict[str, object], base_url: str | None) -> None:
    fragment = options.pop("_fragment", False)
    model = "https://host.example/model.gguf" + (f"#sha256={SHA}" if fragment else "")
    with pytest.raises(InvalidOption):
        check_download("url", model, base_url=base_url, **options)


def test_parsing() -> None:
    ref = parse_url_ref(f" https://host.example:8443/dir/model.gguf?sig=1#sha256={SHA.upper()} ")
    assert str(ref.url) == "https://host.example:8443/dir/model.gguf?sig=1"
    assert ref.sha256 == SHA
    assert parse_url_ref("http://[::1]:8080/m.gguf").url.host == "::1"
    check_download("url", f"https://host.example/model.gguf#sha256={SHA}", sha256=SHA)


def test_content_disposition_names() -> None:
    assert disposition_filename('attachment; filename="a.gguf"') == "a.gguf"
    assert disposition_filename("attachment; filename=a.gguf") == "a.gguf"
    assert disposition_filename("attachment; filename*=UTF-8''caf%C3%A9.gguf; filename=\"x\"") == "café.gguf"
    assert disposition_filename('attachment; filename="q\\"uote.gguf"') == 'q"uote.gguf'
    assert disposition_filename("inline") is None
    assert disposition_filename("attachment; filename*=bogus-charset''x.gguf; filename=y.gguf") == "y.gguf"


@pytest.mark.parametrize(
    "name", ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b", "x\x00y", "x\ny", "x\x7f", ".hidden",
             "é" * 101],
)
def test_hostile_file_names(name: str) -> None:
    with pytest.raises(UnsafeSource):
        check_file_name(name, "the test")


def test_names_of_references() -> None:
    assert name_of("https://host/dir/model.gguf?sig=1#sha256=ab") == "model.gguf"
    assert name_of("http:/127.0.0.1:8/caf%C3%A9.gguf") == "café.gguf"
    assert name_of("model.gguf") == "model.gguf"
