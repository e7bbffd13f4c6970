"""Self-checks of the test servers: each proves one specified behaviour.

If one of these fails, the server (or olah's behaviour) changed and the rest of
the suite can no longer be trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.servers.hf_front import HfFront, parse_range
from tests.servers.olah import OlahServer, git_blob_id
from tests.servers.ollama_emulator import OllamaEmulator, parse_model_name

_counter = iter(range(10**6))


def _repo(prefix: str = "selfcheck") -> str:
    return f"{prefix}/r{os.getpid()}-{next(_counter)}-{int(time.time() * 1000) % 100000}"


def _files() -> dict:
    return {
        "config.json": b'{"model_type": "test"}\n',
        "model.safetensors": os.urandom(1_000_003),
        "nested/dir/tokenizer.txt": b"a b c\n" * 100,
        "empty.txt": b"",
    }


# ----------------------------------------------------------------- olah ---


def test_olah_snapshot_download_exact_bytes(olah: OlahServer, tmp_path: Path) -> None:
    repo = _repo()
    files = _files()
    sha = olah.make_repo(repo, files)
    assert len(sha) == 40
    assert olah.files(repo)["model.safetensors"].lfs  # *.safetensors -> LFS by default
    assert not olah.files(repo)["config.json"].lfs
    path = snapshot_download(repo, endpoint=olah.endpoint, cache_dir=tmp_path / "c")
    assert Path(path).name == sha
    got = {str(p.relative_to(path)): p.read_bytes() for p in Path(path).rglob("*") if p.is_file()}
    assert got == files


def test_olah_raw_headers_and_documented_gaps(olah: OlahServer) -> None:
    repo = _repo()
    files = _files()
    sha = olah.make_repo(repo, files)
    lfs = olah.files(repo)["model.safetensors"]
    small = olah.files(repo)["config.json"]
    with httpx.Client(base_url=olah.endpoint) as c:
        h = c.head(f"/{repo}/resolve/main/model.safetensors")
        assert h.status_code == 200
        assert (
            h.headers["etag"]
            == lfs.sha256
            == hashlib.sha256(files["model.safetensors"]).hexdigest()
        )
        assert h.headers["x-repo-commit"] == sha
        assert int(h.headers["content-length"]) == lfs.size
        assert "x-linked-size" not in h.headers  # gap
        h = c.head(f"/{repo}/resolve/main/config.json")
        assert h.headers["etag"] == small.blob_id == git_blob_id(files["config.json"])
        # gap: Range ignored, whole file with 200
        g = c.get(f"/{repo}/resolve/main/model.safetensors", headers={"Range": "bytes=0-9"})
        assert g.status_code == 200 and g.content == files["model.safetensors"]
        assert "etag" not in g.headers
        # gap: siblings without sizes; info without revision refused
        info = c.get(f"/api/models/{repo}/revision/main", params={"blobs": "true"}).json()
        assert info["sha"] == sha
        assert all(set(s) == {"rfilename"} for s in info["siblings"])
        assert c.get(f"/api/models/{repo}").status_code == 401
        # gap: unknown revision / missing file -> RepoNotFound
        assert (
            c.head(f"/{repo}/resolve/nope/config.json").headers.get("x-error-code")
            == "RepoNotFound"
        )
        assert (
            c.head(f"/{repo}/resolve/main/missing.txt").headers.get("x-error-code")
            == "RepoNotFound"
        )


def test_olah_new_commits_and_refs(olah: OlahServer) -> None:
    repo = _repo()
    sha1 = olah.make_repo(repo, {"a.txt": b"one"})
    sha2 = olah.make_repo(repo, {"a.txt": b"two", "b.txt": b"b"})
    assert sha1 != sha2
    olah.add_ref(repo, "v1", sha1)
    with httpx.Client(base_url=olah.endpoint) as c:
        assert c.get(f"/{repo}/resolve/main/a.txt").content == b"two"
        assert c.get(f"/{repo}/resolve/{sha1}/a.txt").content == b"one"
        assert c.get(f"/{repo}/resolve/v1/a.txt").content == b"one"
    with pytest.raises(ValueError):
        olah.make_repo(repo, {"odd.bin": os.urandom(130)}, lfs=set())  # olah bug guard


# ------------------------------------------------------------- hf_front ---


def test_front_metadata_like_the_hub(olah: OlahServer, hf_front: HfFront) -> None:
    repo = _repo()
    sha = olah.make_repo(repo, _files())
    want = olah.files(repo)
    info = HfApi(endpoint=hf_front.endpoint).model_info(repo, files_metadata=True)  # no revision
    assert info.sha == sha
    sib = {s.rfilename: s for s in info.siblings}
    assert set(sib) == set(want)
    for p, f in want.items():
        assert sib[p].size == f.size
        assert sib[p].blob_id == f.blob_id
        if f.lfs:
            assert (
                sib[p].lfs is not None
                and sib[p].lfs.sha256 == f.sha256
                and sib[p].lfs.size == f.size
            )
        else:
            assert sib[p].lfs is None
    for p, f in want.items():
        m = get_hf_file_metadata(hf_hub_url(repo, p, endpoint=hf_front.endpoint))
        assert (m.etag, m.size, m.commit_hash) == (f.etag, f.size, sha)
    with httpx.Client() as c:
        h = c.head(hf_hub_url(repo, "model.safetensors", endpoint=hf_front.endpoint))
        assert h.headers["etag"] == f'"{want["model.safetensors"].sha256}"'
        assert h.headers["x-linked-size"] == str(want["model.safetensors"].size)
        assert h.headers["accept-ranges"] == "bytes"


def test_front_ranges(olah: OlahServer, hf_front: HfFront) -> None:
    repo = _repo()
    files = _files()
    olah.make_repo(repo, files)
    data = files["model.safetensors"]
    url = hf_hub_url(repo, "model.safetensors", endpoint=hf_front.endpoint)
    with httpx.Client() as c:
        r = c.get(url, headers={"Range": "bytes=100-199"})
        assert r.status_code == 206 and r.content == data[100:200]
        assert r.headers["content-range"] == f"bytes 100-199/{len(data)}"
        r = c.get(url, headers={"Range": "bytes=999990-"})
        assert r.status_code == 206 and r.content == data[999990:]
        r = c.get(url, headers={"Range": "bytes=-7"})
        assert r.status_code == 206 and r.content == data[-7:]
        r = c.get(url, headers={"Range": f"bytes={len(data)}-"})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"
        r = c.get(url)
        assert r.status_code == 200 and r.content == data
        assert int(r.headers["content-length"]) == len(data)
        hf_front.serve_lfs_from_disk()
        r = c.get(url, headers={"Range": "bytes=500000-500009"})
        assert r.status_code == 206 and r.content == data[500000:500010]
        assert c.get(url).content == data
    assert parse_range("bytes=5-2", 10) is None and parse_range("bytes=0-0,5-6", 10) is None


def test_front_64mib_file_tail_range(olah: OlahServer, hf_front: HfFront) -> None:
    repo = _repo()
    big = os.urandom(64 * 1024 * 1024)
    olah.make_repo(repo, {"big.gguf": big})
    url = hf_hub_url(repo, "big.gguf", endpoint=hf_front.endpoint)
    with httpx.Client(timeout=60) as c:
        r = c.get(url, headers={"Range": f"bytes={len(big) - 1_000_000}-"})
    assert r.status_code == 206 and r.content == big[-1_000_000:]


def test_front_error_codes(olah: OlahServer, hf_front: HfFront) -> None:
    repo = _repo()
    olah.make_repo(repo, {"config.json": b"{}", "w.bin": b"x" * 1000})
    ep = hf_front.endpoint
    api = HfApi(endpoint=ep)

    def code(resp: httpx.Response):
        return resp.status_code, resp.headers.get("x-error-code")

    with httpx.Client() as c:
        # natural Hub behaviour for things olah gets wrong
        assert code(c.head(hf_hub_url(repo, "missing.txt", endpoint=ep))) == (404, "EntryNotFound")
        assert code(c.head(hf_hub_url(repo, "config.json", revision="nope", endpoint=ep))) == (
            404,
            "RevisionNotFound",
        )
        assert code(c.get(f"{ep}/api/models/{repo}/revision/nope")) == (404, "RevisionNotFound")
        assert code(c.head(hf_hub_url(repo + "x", "config.json", endpoint=ep))) == (
            401,
            "RepoNotFound",
        )
        with pytest.raises(EntryNotFoundError):
            get_hf_file_metadata(hf_hub_url(repo, "missing.txt", endpoint=ep))

        rid = hf_front.gate(repo)
        assert code(c.head(hf_hub_url(repo, "w.bin", endpoint=ep))) == (401, "GatedRepo")
        r = c.get(hf_hub_url(repo, "w.bin", endpoint=ep), headers={"Authorization": "Bearer t"})
        assert code(r) == (403, "GatedRepo") and "restricted" in r.json()["error"]
        assert code(c.get(f"{ep}/api/models/{repo}/revision/main")) == (401, "GatedRepo")
        with pytest.raises(GatedRepoError):
            api.model_info(repo)
        hf_front.remove_rule(rid)

        hf_front.gate(repo, api=False, allowed_tokens=["granted"])
        assert api.model_info(repo).gated == "manual"
        assert (
            c.head(
                hf_hub_url(repo, "w.bin", endpoint=ep), headers={"Authorization": "Bearer granted"}
            ).status_code
            == 200
        )
        hf_front.clear_rules()

        hf_front.repo_not_found(repo)
        assert code(c.get(f"{ep}/api/models/{repo}")) == (401, "RepoNotFound")
        with pytest.raises(RepositoryNotFoundError) as ei:
            api.model_info(repo)
        assert not isinstance(ei.value, GatedRepoError)
        hf_front.clear_rules()

        hf_front.revision_not_found(repo, "v9")
        with pytest.raises(RevisionNotFoundError):
            api.model_info(repo, revision="v9")
        hf_front.entry_not_found(repo, "w.bin")
        assert code(c.get(hf_hub_url(repo, "w.bin", endpoint=ep))) == (404, "EntryNotFound")
        hf_front.clear_rules()

        hf_front.server_error(503, repo_id=repo, retry_after=7, times=2, on="files")
        for _ in range(2):
            r = c.get(hf_hub_url(repo, "w.bin", endpoint=ep))
            assert r.status_code == 503 and r.headers["retry-after"] == "7"
        assert c.get(hf_hub_url(repo, "w.bin", endpoint=ep)).content == b"x" * 1000
        assert c.get(f"{ep}/api/models/{repo}/revision/main").status_code == 200

        hf_front.require_token("sekrit", repo)
        assert code(c.head(hf_hub_url(repo, "w.bin", endpoint=ep))) == (401, "RepoNotFound")
        r = c.head(
            hf_hub_url(repo, "w.bin", endpoint=ep), headers={"Authorization": "Bearer wrong"}
        )
        assert (
            r.status_code == 401
            and r.headers["x-error-message"] == "Invalid credentials in Authorization header"
        )
        with pytest.raises(HfHubHTTPError):
            HfApi(endpoint=ep, token="wrong").model_info(repo)
        ok = c.get(
            hf_hub_url(repo, "w.bin", endpoint=ep), headers={"Authorization": "Bearer sekrit"}
        )
        assert ok.status_code == 200
    hf_front.wait_idle()
    log = hf_front.log
    assert "sekrit" not in repr(log) and "wrong" not in repr(log)
    assert any(r.auth_present for r in log) and any(not r.auth_present for r in log)


def test_front_cut_once_then_whole_file(olah: OlahServer, hf_front: HfFront) -> None:
    repo = _repo()
    files = _files()
    olah.make_repo(repo, files)
    data = files["model.safetensors"]
    url = hf_hub_url(repo, "model.safetensors", endpoint=hf_front.endpoint)
    hf_front.cut_after(4096, path="model.safetensors", times=1)
    with httpx.Client() as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.get(url)
        assert c.get(url).content == data
    hf_front.wait_idle()
    gets = hf_front.requests(method="GET", file_path="model.safetensors")
    assert [g.cut for g in gets] == [True, False]
    assert gets[0].bytes_sent == 4096 and not gets[0].client_disconnected
    assert gets[1].bytes_sent == len(data)
    assert hf_front.file_bytes_sent(repo, "model.safetensors") == 4096 + len(data)
    assert hf_front.bytes_sent(f"/{repo}/resolve/main/model.safetensors") == 4096 + len(data)


def test_front_throttle_stall_and_disconnect(olah: OlahServer, hf_front: HfFront) -> None:
    repo = _repo()
    files = _files()
    olah.make_repo(repo, files)
    url = hf_hub_url(repo, "model.safetensors", endpoint=hf_front.endpoint)
    hf_front.throttle(1_000_000, path="*.safetensors")
    hf_front.stall(0.4, after_bytes=1000)
    t = time.monotonic()
    with httpx.Client() as c:
        r = c.get(url, headers={"Range": "bytes=0-199999"})
    took = time.monotonic() - t
    assert r.content == files["model.safetensors"][:200000]
    assert 0.55 <= took < 3, took  # 0.2 s of throttled bytes + 0.4 s stall
    # client leaves early: recorded as a disconnect, not all bytes sent
    with httpx.Client() as c, c.stream("GET", url, headers={"Authorization": "Bearer abc"}) as s:
        for _ in s.iter_bytes(16384):
            break
    assert hf_front.wait_idle(5)
    rec = hf_front.requests(method="GET")[-1]
    assert rec.client_disconnected and rec.auth_present
    assert 0 < rec.bytes_sent < len(files["model.safetensors"])


def test_front_lfs_redirect_goes_to_other_origin_without_auth(
    olah: OlahServer, hf_front: HfFront
) -> None:
    repo = _repo()
    files = _files()
    sha = olah.make_repo(repo, files)
    hf_front.redirect_lfs()
    url = hf_hub_url(repo, "model.safetensors", endpoint=hf_front.endpoint)
    m = get_hf_file_metadata(url)
    assert (
        m.location.startswith(hf_front.cdn_endpoint)
        and m.etag == olah.files(repo)["model.safetensors"].sha256
    )
    with httpx.Client(follow_redirects=True) as c:
        r = c.get(url, headers={"Authorization": "Bearer tok"})
        assert r.content == files["model.safetensors"]
        assert r.history[0].status_code == 302 and r.history[0].headers["x-repo-commit"] == sha
        small = c.get(hf_hub_url(repo, "config.json", endpoint=hf_front.endpoint))
        assert small.history == [] and small.content == files["config.json"]
    hf_front.wait_idle()
    cdn = hf_front.requests(server="cdn", method="GET")
    assert (
        len(cdn) == 1
        and not cdn[0].auth_present
        and cdn[0].bytes_sent == len(files["model.safetensors"])
    )


# ------------------------------------------------------ ollama emulator ---


def _pull(emu: OllamaEmulator, body: dict, timeout: float = 20):
    with (
        httpx.Client(timeout=timeout) as c,
        c.stream("POST", emu.base_url + "/api/pull", json=body) as r,
    ):
        lines = [json.loads(x) for x in r.iter_lines() if x.strip()]
        return r, lines


def test_emulator_stream_sequence(ollama_emulator: OllamaEmulator) -> None:
    emu = ollama_emulator
    m = emu.add_model("llama3.2:1b", layers=[3_000_000, 1_200, 90], bytes_per_sec=10_000_000)
    t = time.monotonic()
    r, lines = _pull(emu, {"model": "llama3.2:1b"})
    took = time.monotonic() - t
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    assert 0.25 < took < 3, took
    assert lines[0] == {"status": "pulling manifest"}
    assert [x["status"] for x in lines[-3:]] == [
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    body = lines[1:-3]
    order = []
    for x in body:
        assert list(x) == ["status", "digest", "total", "completed"]
        if not order or order[-1] != x["digest"]:
            order.append(x["digest"])
    assert order == [la.digest for la in m.layers]  # sequential, each once
    for la in m.layers:
        mine = [x for x in body if x["digest"] == la.digest]
        assert all(
            x["status"] == "pulling " + la.digest[7:19] and x["total"] == la.size for x in mine
        )
        done = [x["completed"] for x in mine]
        assert done == sorted(done) and done[0] == 0 and done[-1] == la.size
    assert len([x for x in body if x["digest"] == m.layers[0].digest]) >= 5  # paced, many lines
    tags = httpx.get(emu.base_url + "/api/tags").json()["models"]
    assert [(x["name"], x["size"]) for x in tags] == [("llama3.2:1b", m.total_size)]
    assert len(tags[0]["digest"]) == 64 and tags[0]["modified_at"][:2] == "20"
    assert "version" in httpx.get(emu.base_url + "/api/version").json()
    # pulled again: every layer complete at once
    _, again = _pull(emu, {"name": "llama3.2:1b"})
    assert [x.get("completed") for x in again[1:-3]] == [la.size for la in m.layers]


def test_emulator_errors_and_modes(ollama_emulator: OllamaEmulator) -> None:
    emu = ollama_emulator
    with httpx.Client() as c:
        r = c.post(emu.base_url + "/api/pull", json={"model": "bad name!"})
        assert r.status_code == 400 and r.json() == {"error": "invalid model name"}
        r, lines = _pull(emu, {"model": "nosuch"})
        assert r.status_code == 200
        assert lines == [
            {"status": "pulling manifest"},
            {"error": "pull model manifest: file does not exist"},
        ]
        r = c.post(emu.base_url + "/api/pull", json={"model": "nosuch", "stream": False})
        assert (
            r.status_code == 500 and r.json()["error"] == "pull model manifest: file does not exist"
        )
        emu.set_unknown_model_mode("http500")
        r = c.post(emu.base_url + "/api/pull", json={"model": "nosuch"})
        assert r.status_code == 500 and r.json() == {
            "error": "pull model manifest: file does not exist"
        }
        emu.add_model("tiny", layers=[1000])
        r = c.post(emu.base_url + "/api/pull", json={"name": "tiny", "stream": False})
        assert r.status_code == 200 and r.json() == {"status": "success"}
        assert r.headers["content-type"].startswith("application/json")
        r = c.request("DELETE", emu.base_url + "/api/delete", json={"model": "tiny"})
        assert r.status_code == 200
        r = c.request("DELETE", emu.base_url + "/api/delete", json={"name": "tiny"})
        assert r.status_code == 404 and r.json() == {"error": "model 'tiny' not found"}
        assert c.get(emu.base_url + "/api/tags").json() == {"models": []}
    assert parse_model_name("hf.co/org/Repo-GGUF:Q4_K_M") is not None
    assert parse_model_name("ns.dot/model") is None and parse_model_name("a/b/c/d") is None
    assert [p.outcome for p in emu.pulls] == ["invalid", "unknown", "unknown", "unknown", "success"]


def test_emulator_disconnect_stops_and_resume(ollama_emulator: OllamaEmulator) -> None:
    emu = ollama_emulator
    m = emu.add_model("big:7b", layers=[50_000_000, 500], bytes_per_sec=20_000_000)
    big = m.layers[0]
    with (
        httpx.Client() as c,
        c.stream("POST", emu.base_url + "/api/pull", json={"model": "big:7b"}) as r,
    ):
        for n, _ in enumerate(r.iter_lines(), 1):
            if n == 6:
                break
    p = emu.wait_disconnect(5)
    k = p.completed_at_disconnect[big.digest]
    assert 0 < k < big.size
    emu.assert_no_progress_after_disconnect(p, settle=0.3)
    assert emu.progress(big.digest) == k
    assert not emu.is_pulled("big:7b")
    # resumes at K
    emu.add_model("big:7b", layers=[(big.digest, big.size), 500], bytes_per_sec=200_000_000)
    _, lines = _pull(emu, {"model": "big:7b"})
    first = next(x for x in lines if x.get("digest") == big.digest)
    assert first["completed"] == k
    assert lines[-1] == {"status": "success"} and emu.is_pulled("big:7b")


def test_emulator_faults(ollama_emulator: OllamaEmulator) -> None:
    emu = ollama_emulator
    emu.add_model("m", layers=[20_000_000, 100], bytes_per_sec=100_000_000)
    emu.fail_after("m", 5_000_000)
    r, lines = _pull(emu, {"model": "m"})
    assert r.status_code == 200 and lines[-1] == {"error": "max retries exceeded: EOF"}
    assert not any(x.get("status") == "success" for x in lines)
    assert all(x.get("completed", 0) <= 5_000_000 for x in lines)
    emu.cut_after("m", 10_000_000)
    with pytest.raises(httpx.RemoteProtocolError):
        _pull(emu, {"model": "m"})
    emu.wait_idle()
    cut = emu.pulls[-1]
    assert (
        cut.outcome == "cut"
        and "error" not in cut.lines[-1]
        and cut.lines[-1].get("status") != "success"
    )
    assert cut.lines[1]["completed"] == 5_000_000  # resumed where the error left it
    emu.stall("m", 0.5, after_bytes=12_000_000)
    t = time.monotonic()
    _, lines = _pull(emu, {"model": "m"})
    assert time.monotonic() - t >= 0.5
    at = [x for x in lines if x.get("completed") == 12_000_000]
    assert len(at) >= 5  # the ticker kept reporting the same figure during the stall
    assert lines[-1] == {"status": "success"}
