"""Case 10 (fuzzed model references) and case 11 (hostile sources).

Case 10: for every provider, hypothesis generates model references, some
surely invalid, some arbitrary. Whatever comes in: never an exception out of
``download_model``, exactly one terminal event, and a reference rejected as
``invalid_model`` has opened no connection at all (``base_url`` points at a
proxy that counts TCP connections and answers 404 to anything).

Case 11: a source that lies. A Hub file list or an OCI manifest naming
``../../x`` or an absolute path, a digest that is not ``sha256:<64 hex>``,
sizes far from what is sent or larger than the disk, a redirect to another
host while a token is in use. Each is refused with a clear error; nothing is
written outside the store; no credential reaches the other host.
"""

from __future__ import annotations

import asyncio
import json
import os
import string
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelpull import DownloadStatus, provider_names
from tests.servers.fault_proxy import FaultProxy
from tests.servers.registry import MANIFEST_V2, DockerRegistry

from .conftest import (
    CANARY,
    MB,
    Capture,
    Source,
    collect,
    finish,
    hf_repo_source,
    json_lines,
    registry_model_source,
    spawn,
)

ERROR = DownloadStatus.ERROR

# ------------------------------------------------------------------ 10. fuzzed references
#: characters no model reference of any provider may hold in its repo/name part
BAD_CHARS = " \t\n\r\x00\x7f%?#@!$&'()*+,;=[]{}<>|\\^`\"~é模🙂"
_NAME = st.text(string.ascii_letters + string.digits, min_size=1, max_size=12)
HF_FAMILY = ("huggingface", "mlx", "gguf", "lmstudio")
OLLAMA_FAMILY = ("ollama", "ollama-registry")
OCI_FAMILY = ("oci",)
MODELSCOPE_FAMILY = ("modelscope",)
URL_FAMILY = ("url",)
#: what makes a URL invalid wherever it stands (other characters are percent-encoded)
URL_BAD_CHARS = " \t\n\r\x00\x7f"


def with_bad_char(draw: st.DrawFn, text: str, start: int = 0) -> str:
    """``text`` with a forbidden character put at or after ``start``, never at either end
    (some forms trim surrounding blanks, which is no bug)."""
    at = draw(st.integers(max(1, start), max(1, len(text) - 1)))
    return text[:at] + draw(st.sampled_from(BAD_CHARS)) + text[at:]


@st.composite
def invalid_hf_reference(draw: st.DrawFn, provider: str) -> str:
    org, name = draw(_NAME), draw(_NAME)
    kind = draw(st.sampled_from(["bad_char", "dots", "dashes", "edge", "long", "empty", "slashes", "traversal"]))
    if kind == "bad_char":
        return with_bad_char(draw, f"{org}/{name}", start=0 if draw(st.booleans()) else len(org) + 1)
    if kind == "dots":
        return f"{org}/{name}..x"
    if kind == "dashes":
        return f"{org}--{name}/{name}"
    if kind == "edge":
        return draw(st.sampled_from([f"-{org}/{name}", f"{org}/{name}.", f".{org}/{name}", f"{org}/-{name}"]))
    if kind == "long":
        return f"{org}/{name}" + "a" * 97
    if kind == "empty":
        return draw(st.sampled_from(["", " ", "/", f"{org}/", f"/{name}", "\t"]))
    if kind == "slashes":
        suffix = "x" if provider not in ("gguf", "lmstudio") else "x.bin"  # a path must name a .gguf
        return f"{org}/{name}/{suffix}"
    return draw(st.sampled_from([f"{org}/{name}/../../x.gguf", f"{org}/{name}//etc/x.gguf",
                                 f"{org}/{name}/a\\b.gguf", f"{org}/{name}/./x.gguf", "../../etc/passwd"]))


@st.composite
def invalid_ollama_reference(draw: st.DrawFn) -> str:
    model, tag = draw(_NAME), draw(_NAME)
    kind = draw(st.sampled_from(["bad_char", "parts", "empty_part", "dotted_namespace", "long", "edge"]))
    if kind == "bad_char":
        return with_bad_char(draw, f"ns/{model}:{tag}", start=draw(st.sampled_from([0, 3])))
    if kind == "parts":
        return f"h/ns/{model}/x:{tag}"
    if kind == "empty_part":
        return draw(st.sampled_from([f"/{model}", f"{model}:", f"ns//{model}", f"{model}/", "", ":", "/"]))
    if kind == "dotted_namespace":
        return f"a.b/{model}:{tag}"
    if kind == "long":
        return "m" * 81 + f":{tag}"
    return draw(st.sampled_from([f"-{model}", f".{model}:{tag}", f"{model}:-{tag}", f"ns/{model}:.x"]))


@st.composite
def invalid_oci_reference(draw: st.DrawFn) -> str:
    model, tag = draw(_NAME), draw(_NAME)
    kind = draw(st.sampled_from(["bad_char", "empty_part", "digest", "tag", "separators", "long"]))
    if kind == "bad_char":
        return with_bad_char(draw, f"ns/{model}:{tag}", start=draw(st.sampled_from([0, 3])))
    if kind == "empty_part":
        return draw(st.sampled_from([f"ns//{model}", f"/{model}", f"{model}/", "", "@", "/", f"{model}@"]))
    if kind == "digest":
        return draw(st.sampled_from([f"{model}@sha256:{'g' * 64}", f"{model}@md5:{'a' * 32}",
                                     f"{model}@sha256:{'A' * 64}", f"{model}:{tag}@sha256:12"]))
    if kind == "tag":
        return draw(st.sampled_from([f"{model}:-{tag}", f"{model}:.{tag}", f"{model}:{tag}" + "t" * 128]))
    if kind == "separators":
        return draw(st.sampled_from([f"-{model}", f"ns/{model}-", f"ns/.{model}", f"ns/{model}..x",
                                     f"ns/{model}___x", f"_{model}/x"]))
    return "ns/" + "m" * 300


@st.composite
def invalid_modelscope_reference(draw: st.DrawFn) -> str:
    owner, name = draw(_NAME), draw(_NAME)
    kind = draw(st.sampled_from(["bad_char", "dots", "edge", "empty", "slashes", "traversal", "tag"]))
    if kind == "bad_char":
        return with_bad_char(draw, f"{owner}/{name}", start=0 if draw(st.booleans()) else len(owner) + 1)
    if kind == "dots":
        return f"{owner}/{name}..x"
    if kind == "edge":
        return draw(st.sampled_from([f"-{owner}/{name}", f".{owner}/{name}", f"{owner}/-{name}", f"{owner}/.{name}"]))
    if kind == "empty":
        return draw(st.sampled_from(["", " ", "/", f"{owner}/", f"/{name}", "\t", f"{owner}/{name}:"]))
    if kind == "slashes":
        return f"{owner}/{name}/x.bin"  # a path must name a .gguf
    if kind == "tag":
        return draw(st.sampled_from([f"{owner}/{name}:-Q4", f"{owner}/{name}:Q4/K", f"{owner}/{name}:" + "q" * 65]))
    return draw(st.sampled_from([f"{owner}/{name}/../../x.gguf", f"{owner}/{name}//etc/x.gguf",
                                 f"{owner}/{name}/a\\b.gguf", f"{owner}/{name}/./x.gguf", "../../etc/passwd"]))


@st.composite
def invalid_url_reference(draw: st.DrawFn) -> str:
    name = draw(_NAME)
    kind = draw(st.sampled_from(["bad_char", "scheme", "host", "port", "fragment", "credentials", "empty"]))
    if kind == "bad_char":
        text = f"http://127.0.0.1:9/{name}.gguf"
        at = draw(st.integers(1, len(text) - 1))
        return text[:at] + draw(st.sampled_from(URL_BAD_CHARS)) + text[at:]
    if kind == "scheme":
        return draw(st.sampled_from([f"ftp://127.0.0.1/{name}", f"file:///{name}", f"127.0.0.1/{name}",
                                     f"{name}.gguf", f"javascript:{name}"]))
    if kind == "host":
        return draw(st.sampled_from([f"http:///{name}.gguf", f"https://:80/{name}", "http://"]))
    if kind == "port":
        return draw(st.sampled_from([f"http://127.0.0.1:99999/{name}", f"http://127.0.0.1:x/{name}"]))
    if kind == "fragment":
        return draw(st.sampled_from([f"http://127.0.0.1:9/{name}#x", f"http://127.0.0.1:9/{name}#sha256=12",
                                     f"http://127.0.0.1:9/{name}#sha256={'g' * 64}"]))
    if kind == "credentials":
        return f"http://user:{name}@127.0.0.1:9/{name}.gguf"
    return draw(st.sampled_from(["", " ", "\t"]))


def invalid_reference(provider: str) -> st.SearchStrategy[str]:
    if provider in MODELSCOPE_FAMILY:
        return invalid_modelscope_reference()
    if provider in URL_FAMILY:
        return invalid_url_reference()
    if provider in OCI_FAMILY:
        return invalid_oci_reference()
    return invalid_hf_reference(provider) if provider in HF_FAMILY else invalid_ollama_reference()


def _names_no_host(text: str) -> bool:
    """An OCI reference whose first part is a registry (``a.b/x``, ``h:1/x``, ``localhost/x``) goes there."""
    first, slash, _ = text.strip().lower().partition("/")
    return not slash or not ("." in first or ":" in first or first == "localhost")


def any_reference(provider: str, base: str) -> st.SearchStrategy[str]:
    """Arbitrary text, and near misses of the provider's own forms (URLs: on ``base``)."""
    near = st.builds(
        lambda a, sep, b, tail: a + sep + b + tail,
        _NAME, st.sampled_from(["/", ":", "", "//", "/.", "-"]), _NAME,
        st.sampled_from(["", ":Q4_K_M", ":latest", "/x.gguf", "..", " ", "\n", ":1b"]),
    )
    text = st.text(max_size=60)
    if provider == "ollama-registry":
        # A valid name with a host part goes to that host; keep fuzzed hosts away from DNS.
        text = text.filter(lambda t: t.count("/") < 2)
        near = near.filter(lambda t: t.count("/") < 2)
    if provider in OCI_FAMILY:
        text = text.filter(_names_no_host)
        near = near.filter(_names_no_host)
    if provider in URL_FAMILY:
        # Arbitrary text never names a host (no DNS); the near misses are URLs of the recorder.
        text = text.filter(lambda t: "/" not in t and "\\" not in t)
        near = st.builds(
            lambda name, tail: f"{base}/{name}{tail}", _NAME,
            st.sampled_from(["", ".gguf", "/x.gguf", "?sig=1", "#sha256=" + "a" * 64, "#x", " ", "\n", " x"]),
        )
    return st.one_of(text, near)


@pytest.fixture
def recorder(make_proxy: Callable[..., FaultProxy]) -> FaultProxy:
    """Counts every TCP connection and answers 404 to any request (nothing behind it)."""
    proxy = make_proxy("http://127.0.0.1:9")
    proxy.error(404, times=None, body=b'{"error": "not found"}')
    return proxy


def fuzz_options(provider: str, tmp: Path) -> dict[str, Any]:
    if provider in ("huggingface", "mlx", "gguf"):
        return {"cache_dir": str(tmp / "hf")}
    if provider == "lmstudio":
        return {"models_dir": str(tmp / "lms"), "cache_dir": str(tmp / "hf")}
    if provider == "ollama-registry":
        return {"models_dir": str(tmp / "ollama"), "insecure": True, "max_retries": 1}
    if provider in (*OCI_FAMILY, "docker"):
        return {"models_dir": str(tmp / "docker-models"), "insecure": True, "max_retries": 1}
    if provider in (*MODELSCOPE_FAMILY, "ms"):
        return {"cache_dir": str(tmp / "modelscope"), "max_retries": 1}
    if provider in URL_FAMILY:
        return {"local_dir": str(tmp / "url"), "max_retries": 1}
    return {}


def network_use(recorder: FaultProxy) -> int:
    """Connections opened plus requests sent (a pooled connection may carry a new request)."""
    return recorder.connections + len(recorder.log)


def run_one(provider: str, model: str, recorder: FaultProxy, tmp: Path) -> tuple[str | None, int]:
    """One download; returns (error code or None, connections opened + requests sent)."""
    before = network_use(recorder)
    options = fuzz_options(provider, tmp)
    if provider == "lmstudio":
        options.pop("cache_dir")
    base_url = None if provider in URL_FAMILY else recorder.url  # a URL is its own address
    events = asyncio.run(collect(provider, model, base_url=base_url, **options))
    assert events[-1].error_code != "internal_error", (model, events[-1].message)
    return events[-1].error_code, network_use(recorder) - before


def test_every_provider_is_fuzzed() -> None:
    assert set(provider_names()) == (set(HF_FAMILY) | set(OLLAMA_FAMILY) | set(OCI_FAMILY)
                                     | set(MODELSCOPE_FAMILY) | set(URL_FAMILY)), provider_names()


_FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("provider", [*HF_FAMILY, *OLLAMA_FAMILY, *OCI_FAMILY, *MODELSCOPE_FAMILY, *URL_FAMILY,
                                      "hf", "docker", "ms"])
def test_10_an_invalid_reference_is_one_invalid_model_error_and_no_network(
    provider: str, recorder: FaultProxy, tmp_path: Path
) -> None:
    @_FUZZ
    @given(model=invalid_reference({"hf": "huggingface", "docker": "oci", "ms": "modelscope"}.get(provider, provider)))
    def check(model: str) -> None:
        code, connections = run_one(provider, model, recorder, tmp_path)
        assert code == "invalid_model", (model, code)
        assert connections == 0, f"{model!r} opened {connections} connection(s)"

    check()


@pytest.mark.parametrize("provider", [*HF_FAMILY, *OLLAMA_FAMILY, *OCI_FAMILY, *MODELSCOPE_FAMILY, *URL_FAMILY])
def test_10_any_reference_never_raises_and_invalid_ones_stay_offline(
    provider: str, recorder: FaultProxy, tmp_path: Path
) -> None:
    seen: dict[str, int] = {}

    @_FUZZ
    @given(model=any_reference(provider, recorder.url))
    def check(model: str) -> None:
        code, connections = run_one(provider, model, recorder, tmp_path)
        seen[code or "complete"] = seen.get(code or "complete", 0) + 1
        if code == "invalid_model":
            assert connections == 0, f"{model!r} was refused only after {connections} connection(s)"
        else:
            assert code != "complete"  # nothing behind the recorder: a valid name ends in an error
            assert connections > 0, (model, code)

    check()
    assert "invalid_model" in seen, seen  # both kinds were really tried
    assert len(seen) >= 2, seen


def test_10_non_string_references_and_the_cli_and_service(
    recorder: FaultProxy, tmp_path: Path, start_service: Callable[..., Any], capture: Capture
) -> None:
    for provider in provider_names():
        for model in (None, 42, b"org/name", ["org/name"], {"a": 1}, 3.5):
            code, connections = run_one(provider, model, recorder, tmp_path)  # type: ignore[arg-type]
            assert code == "invalid_model" and connections == 0, (provider, model, code)
    for provider, model in (("huggingface", "org/../x"), ("ollama-registry", "a b:1b"), ("gguf", "org/repo:Q4 K"),
                            ("oci", "ai/x@sha256:1234"), ("modelscope", "org/re po:Q4")):
        proc = spawn([sys.executable, "-m", "modelpull.cli", "pull", provider, model, "--json",
                      "--base-url", recorder.url], env=dict(os.environ, MODELPULL_TOKEN=CANARY))
        out, err = finish(proc, timeout=60)
        assert proc.returncode == 1, err
        lines = json_lines(out)
        # the CLI checks the request before it starts anything: one ERROR line, nothing before it
        assert [line["status"] for line in lines] == ["error"], lines
        assert lines[-1]["error_code"] == "invalid_model"
    service = start_service(hf_endpoint=recorder.url, ollama_url=recorder.url)
    with service.client() as client:
        for provider, model in (("huggingface", "a/b/../c"), ("ollama", "x y"), ("ollama-registry", "h/n/m/x"),
                                ("gguf", "org/repo/../../x.gguf"), ("lmstudio", "org/re po"), ("mlx", "-x/y"),
                                ("oci", "ai/../x"), ("modelscope", "org/.."),
                                ("url", "http://127.0.0.1:9/a b.gguf")):
            answer = client.post("/downloads", json={"provider": provider, "model": model, "token": CANARY})
            capture.add("service-answer", answer.text)
            assert answer.status_code == 400 and answer.json()["error_code"] == "invalid_model", answer.text
        assert client.get("/downloads").json()["jobs"] == []
    assert network_use(recorder) == 0


# ------------------------------------------------------------------ 11. hostile sources
def tree_snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def written_outside(root: Path, before: set[Path], allowed: list[Path]) -> list[Path]:
    return [p for p in tree_snapshot(root) - before
            if not any(p == a or a in p.parents for a in allowed) and p.is_file()]


def hub_info(source: Source, hf_front: Any) -> tuple[str, dict[str, Any]]:
    """The model info the Hub front serves for ``source`` (the path modelpull asks for)."""
    path = f"/api/models/{source.model}/revision/main"
    answer = httpx.get(hf_front.endpoint + path + "?blobs=true", headers={"Authorization": f"Bearer {CANARY}"},
                       trust_env=False)
    assert answer.status_code == 200, answer.text
    return path, answer.json()


HOSTILE_PATHS = ["../../x.safetensors", "/tmp/x.safetensors", "a/../../../x.safetensors", "..\\x.safetensors",
                 "a/./b.safetensors", "x\x00.safetensors"]


@pytest.mark.parametrize("provider", ["huggingface", "mlx", "gguf", "lmstudio"])
async def test_11_a_hub_file_list_naming_paths_outside_the_store_is_refused(
    provider: str, olah: Any, hf_front: Any, make_proxy: Callable[..., FaultProxy], tmp_path: Path
) -> None:
    source = hf_repo_source(olah, hf_front, make_proxy(hf_front.endpoint), tmp_path / "hf-cache")
    path, info = hub_info(source, hf_front)
    template = next(s for s in info["siblings"] if s["rfilename"] == "model.safetensors")
    before = tree_snapshot(tmp_path)
    options = dict(source.options)
    if provider == "lmstudio":
        options = {"models_dir": str(tmp_path / "lms")}
    for hostile in HOSTILE_PATHS:
        name = hostile.replace(".safetensors", ".gguf") if provider in ("gguf", "lmstudio") else hostile
        info["siblings"] = [s for s in info["siblings"] if s is not template] + [{**template, "rfilename": name}]
        source.proxy.clear()
        source.proxy.respond(path, body=json.dumps(info).encode())
        events = await collect(provider, source.model, token=CANARY, base_url=source.base_url, **options)
        assert events[-1].status is ERROR, (hostile, events[-1])
        assert events[-1].error_code == "unsafe_source", (hostile, events[-1].error_code, events[-1].message)
        assert "refusing" in events[-1].message, events[-1].message
    assert not source.proxy.requests("*/resolve/*"), "a file was requested after a hostile file list"
    assert written_outside(tmp_path, before, [tmp_path / "hf-cache", tmp_path / "lms"]) == []
    assert not list((tmp_path / "hf-cache").rglob("snapshots/*/*"))


@pytest.mark.parametrize("revision", ["../../../../escaped", "/tmp/escaped", "refs/../../../escaped", "a\\b",
                                      "main\n", ""])
async def test_11_a_revision_that_names_a_path_is_refused_before_any_network_call(
    revision: str, olah: Any, hf_front: Any, make_proxy: Callable[..., FaultProxy], tmp_path: Path,
    start_service: Callable[..., Any],
) -> None:
    """The cache keeps ``refs/<revision>``: a revision must never lead outside it, even when
    a mirror (the caller's base_url) answers for any revision it is asked."""
    source = hf_repo_source(olah, hf_front, make_proxy(hf_front.endpoint), tmp_path / "a" / "hf-cache")
    _, info = hub_info(source, hf_front)
    source.proxy.respond(f"/api/models/{source.model}/revision/*", body=json.dumps(info).encode())
    before = tree_snapshot(tmp_path)
    for provider in ("huggingface", "mlx", "gguf"):
        events = await collect(provider, source.model, token=CANARY, base_url=source.base_url,
                               cache_dir=str(source.store), revision=revision)
        assert events[-1].error_code == "invalid_option", (provider, revision, events[-1])
    assert not source.proxy.log, "a revision naming a path reached the network"
    assert written_outside(tmp_path, before, [source.store]) == []
    service = start_service(hf_endpoint=source.base_url)
    with service.client() as client:
        answer = client.post("/downloads", json={"provider": "huggingface", "model": source.model,
                                                 "options": {"revision": revision}})
        assert answer.status_code == 400 and answer.json()["error_code"] == "invalid_option", answer.text
    assert not source.proxy.log


async def test_11_hub_digests_and_sizes_that_lie(
    olah: Any, hf_front: Any, make_proxy: Callable[..., FaultProxy], tmp_path: Path
) -> None:
    source = hf_repo_source(olah, hf_front, make_proxy(hf_front.endpoint), tmp_path / "hf-cache")
    path, info = hub_info(source, hf_front)
    weights = next(s for s in info["siblings"] if s["rfilename"] == "model.safetensors")
    cases = [
        ({"lfs": {**weights["lfs"], "sha256": "zz" * 32}}, "unsafe_source"),
        ({"lfs": {**weights["lfs"], "sha256": "../../x"}}, "unsafe_source"),
        ({"size": -5, "lfs": {**weights["lfs"], "size": -5}}, "unsafe_source"),
        ({"size": 10**15, "lfs": {**weights["lfs"], "size": 10**15}}, "disk_full"),  # 1 PB: larger than the disk
        ({"size": 10 * MB, "lfs": {**weights["lfs"], "size": 10 * MB}}, "server_error"),  # more than is sent
        ({"size": MB, "lfs": {**weights["lfs"], "size": MB}}, "server_error"),  # less than is sent
    ]
    for change, code in cases:
        lying = {**weights, **change}
        info["siblings"] = [s for s in info["siblings"] if s["rfilename"] != "model.safetensors"] + [lying]
        source.proxy.clear()
        source.proxy.respond(path, body=json.dumps(info).encode())
        events = await source.pull(stall_timeout=1.0, max_retries=1)
        assert events[-1].status is ERROR and events[-1].error_code == code, (change, events[-1])
        assert not source.published()
    huge = [e for e in source.proxy.requests("*/resolve/*/model.safetensors") if e.method == "GET"]
    assert sum(e.bytes_sent for e in huge) <= 2 * source.big_size  # the lying sizes got one try each, no more


def hostile_manifest(source: Source, **layer: Any) -> bytes:
    real = json.loads(httpx.get(f"http://{source.model.split('/')[0]}/v2/"
                                f"{'/'.join(source.model.split('/')[1:]).split(':')[0]}/manifests/1b",
                                headers={"Accept": MANIFEST_V2}, trust_env=False).content)
    real["layers"][0] = {**real["layers"][0], **layer}
    return json.dumps(real).encode()


@pytest.mark.parametrize(
    ("layer", "code"),
    [
        ({"digest": "sha256:../../../../x"}, "unsafe_source"),
        ({"digest": "sha256:" + "g" * 64}, "unsafe_source"),
        ({"digest": "md5:" + "a" * 32}, "unsafe_source"),
        ({"digest": "sha256:" + "A" * 64}, "unsafe_source"),
        ({"size": -1}, "unsafe_source"),
        ({"size": "12"}, "unsafe_source"),
        ({"size": 1 << 40}, "disk_full"),  # 1 TiB: more than the disk
        ({"size": 10 * MB}, "server_error"),  # more than the registry sends
    ],
)
async def test_11_a_manifest_with_a_bad_digest_or_size_is_refused(
    layer: dict[str, Any], code: str, registry: DockerRegistry, make_proxy: Callable[..., FaultProxy],
    tmp_path: Path,
) -> None:
    source = registry_model_source(registry, make_proxy(registry.url), tmp_path / "ollama")
    repo_tag = source.model.split("/", 1)[1]
    manifest_path = f"/v2/{repo_tag.split(':')[0]}/manifests/{repo_tag.split(':')[1]}"
    source.proxy.respond(manifest_path, body=hostile_manifest(source, **layer), content_type=MANIFEST_V2)
    before = tree_snapshot(tmp_path)
    events = await source.pull(stall_timeout=1.0, max_retries=1)
    assert events[-1].status is ERROR and events[-1].error_code == code, events[-1]
    assert not source.published()
    assert written_outside(tmp_path, before, [tmp_path / "ollama"]) == []
    assert not list((tmp_path / "ollama").rglob("manifests/*"))


async def test_11_a_redirect_to_another_host_carries_no_credentials(
    olah: Any, hf_front: Any, registry: DockerRegistry, make_proxy: Callable[..., FaultProxy],
    tmp_path: Path, capture: Capture,
) -> None:
    # The Hub: the token is needed (and sent) on its own origin; the file is sent to 127.0.0.2.
    source = hf_repo_source(olah, hf_front, make_proxy(hf_front.endpoint), tmp_path / "hf-cache")
    hf_front.clear_rules()  # a public repo, so the other host can serve it without a token
    other = make_proxy(hf_front.endpoint, host="127.0.0.2")
    source.proxy.redirect(other.url, path=source.big_path, status=302)
    events = await source.pull()
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    source.verify()
    assert any(e.auth_present for e in source.proxy.log), "the token was never used"
    assert other.requests(source.big_path), "the redirect was not followed"
    assert not any(e.auth_present for e in other.log), "a credential was sent to another host"

    # A registry whose token realm wants the caller's password, redirecting blobs to another host.
    from tests.servers.registry import RegistryFront

    with RegistryFront(registry.url, token_auth=True, credential=f"modelpull:{CANARY}") as front:
        proxy = make_proxy(front.url)
        elsewhere = make_proxy(registry.url, host="127.0.0.2")
        model = registry.push_tiny(weights=MB)
        proxy.redirect(elsewhere.url, path="/v2/*/blobs/*", status=307)
        capture.canary_uses += 1
        events = await collect("ollama-registry", f"{proxy.netloc}/{model.repo}:{model.tag}",
                               token=f"modelpull:{CANARY}", insecure=True, models_dir=str(tmp_path / "ollama"))
        assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
        assert front.token_requests, "the token realm was never asked"
        assert any(e.auth_present for e in proxy.log)
        assert elsewhere.requests("/v2/*/blobs/*")
        assert not any(e.auth_present for e in elsewhere.log), "a registry token was sent to another host"


