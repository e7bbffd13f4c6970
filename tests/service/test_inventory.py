"""The model inventory: library functions, HTTP endpoints and the ``list``/``rm`` commands."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from modelpull import download_model
from modelpull.cli import main
from modelpull.errors import ConnectionFailed, InvalidModel, ModelNotFound, UnsupportedProvider
from modelpull.inventory import delete_model, list_models, scan_inventory
from modelpull.refs import parse_ollama_name
from modelpull.stores.ollama_store import OllamaStore

from .conftest import free_port, read_ndjson, wait_for


def _download(provider: str, model: str, **kwargs: Any) -> Any:
    async def run() -> Any:
        last = None
        async for event in download_model(provider, model, **kwargs):
            last = event
        return last

    last = asyncio.run(run())
    assert last.status.value == "complete", last
    return last


@pytest.fixture
def local(tmp_path: Path, olah: Any, hf_front: Any, ollama_emulator: Any, repo_id: str) -> dict[str, Any]:
    """An HF cache with a plain and an MLX repo, an Ollama server and store, an LM Studio folder."""
    cache = tmp_path / "hf"
    plain, mlx = repo_id + "-plain", repo_id + "-mlx"
    olah.make_repo(plain, {"config.json": b'{"a": 1}', "pytorch_model.bin": b"p" * 30_000})
    olah.make_repo(mlx, {"config.json": b'{"quantization": {"bits": 4}}', "model.safetensors": b"m" * 20_000})
    for repo in (plain, mlx):
        _download("huggingface", repo, base_url=hf_front.endpoint, cache_dir=str(cache))
    partial_blob = cache / f"models--{plain.replace('/', '--')}" / "blobs" / ("0" * 64 + ".incomplete")
    partial_blob.write_bytes(b"x" * 1234)
    ollama_emulator.add_model("served:1b", [7_000, 100], pulled=True)
    store_dir = tmp_path / "ollama"
    store = OllamaStore(store_dir)
    blobs = {}
    for content in (b'{"config": true}', b"g" * 9_000):
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        store.blob_path(digest).parent.mkdir(parents=True, exist_ok=True)
        store.blob_path(digest).write_bytes(content)
        blobs[digest] = len(content)
    (config_digest, config_size), (layer_digest, layer_size) = blobs.items()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"digest": config_digest, "size": config_size, "mediaType": "application/vnd.docker.container.image.v1+json"},
                "layers": [{"digest": layer_digest, "size": layer_size, "mediaType": "application/vnd.ollama.image.model"}]}
    store.write_manifest(parse_ollama_name("stored:2b"), json.dumps(manifest).encode())
    lmstudio = tmp_path / "lmstudio"
    (lmstudio / "pub" / "tiny-GGUF").mkdir(parents=True)
    (lmstudio / "pub" / "tiny-GGUF" / "tiny-Q4_K_M.gguf").write_bytes(b"q" * 5_000)
    return {"cache": cache, "plain": plain, "mlx": mlx, "store": store_dir, "lmstudio": lmstudio,
            "ollama_url": ollama_emulator.base_url, "store_size": config_size + layer_size}


def _options(local: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"cache_dir": str(local["cache"]), "ollama_url": local["ollama_url"],
            "lmstudio_dir": str(local["lmstudio"]), **extra}


def test_list_models_covers_every_place(local):
    models = {(m.provider, m.name): m for m in list_models(**_options(local))}
    plain = models[("huggingface", local["plain"])]
    assert plain.size_bytes == 30_000 + len(b'{"a": 1}')
    assert plain.partial_bytes == 1234 and not plain.mlx and plain.complete and plain.source == "hf-cache"
    assert len(plain.revisions) == 1 and plain.files == 2
    assert models[("huggingface", local["mlx"])].mlx
    served = models[("ollama", "served:1b")]
    assert served.size_bytes == 7_100 and served.source == "ollama-server"
    assert models[("lmstudio", "pub/tiny-GGUF")].size_bytes == 5_000
    assert [m.name for m in list_models("mlx", **_options(local))] == [local["mlx"]]
    assert {m.provider for m in list_models("hf", **_options(local))} == {"huggingface"}
    sizes = [m.size_bytes for m in list_models(**_options(local))]
    assert sizes == sorted(sizes, reverse=True)


def test_ollama_store_is_read_when_asked_or_when_no_server_answers(local):
    stored = list_models("ollama", ollama_models_dir=str(local["store"]))
    assert [(m.name, m.size_bytes, m.source, m.complete) for m in stored] == [
        ("stored:2b", local["store_size"], "ollama-store", True)
    ]
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionFailed):
        list_models("ollama", ollama_url=closed, ollama_source="server")
    inventory = scan_inventory(None, cache_dir=str(local["cache"]), ollama_url=closed, ollama_source="server")
    assert inventory.notes and "no Ollama server answers" in inventory.notes[0]
    assert {m.provider for m in inventory.models} >= {"huggingface"}


def test_delete_model_everywhere(local):
    options = _options(local)
    with pytest.raises(ModelNotFound):
        delete_model("mlx", local["plain"], **options)  # not an MLX model
    freed = delete_model("huggingface", local["plain"], **options)
    assert freed["freed_bytes"] >= 30_000 + 1234
    assert not (local["cache"] / f"models--{local['plain'].replace('/', '--')}").exists()
    with pytest.raises(ModelNotFound):
        delete_model("huggingface", local["plain"], **options)
    delete_model("mlx", local["mlx"], **options)
    assert delete_model("ollama", "served:1b", **options)["source"] == "ollama-server"
    assert "served:1b" not in [m.name for m in list_models("ollama", **options)]
    with pytest.raises(ModelNotFound):
        delete_model("ollama", "served:1b", **options)
    gone = delete_model("ollama", "stored:2b", ollama_models_dir=str(local["store"]))
    assert gone["freed_bytes"] == local["store_size"] and gone["source"] == "ollama-store"
    assert list(Path(local["store"], "blobs").iterdir()) == []
    delete_model("lmstudio", "pub/tiny-GGUF", **options)
    assert list_models(**options) == []
    with pytest.raises(InvalidModel):
        delete_model("huggingface", "../../etc", **options)
    with pytest.raises(UnsupportedProvider):
        delete_model("napster", "x", **options)


def test_inventory_over_http(start_service, local, hf_front, olah, repo_id):
    service = start_service(hf_cache_dir=str(local["cache"]), hf_endpoint=hf_front.endpoint,
                            ollama_url=local["ollama_url"], lmstudio_dir=str(local["lmstudio"]))
    with service.client() as client:
        listing = client.get("/models").json()
        names = {(m["provider"], m["name"]): m for m in listing["models"]}
        assert names[("huggingface", local["plain"])]["partial_bytes"] == 1234
        assert ("ollama", "served:1b") in names and ("lmstudio", "pub/tiny-GGUF") in names
        assert [m["name"] for m in client.get("/models?provider=mlx").json()["models"]] == [local["mlx"]]
        assert client.get("/models?provider=napster").json()["error_code"] == "unsupported_provider"

        deleted = client.delete(f"/models/huggingface/{local['plain']}")
        assert deleted.status_code == 200 and deleted.json()["name"] == local["plain"]
        again = client.delete(f"/models/huggingface/{local['plain']}")
        assert again.status_code == 404 and again.json()["error_code"] == "not_found"
        assert client.delete("/models/ollama/served:1b").status_code == 200
        assert client.delete("/models/ollama/bad name!").json()["error_code"] == "invalid_model"

        # A model being downloaded cannot be deleted under the download's feet.
        olah.make_repo(repo_id, {"config.json": b'{"quantization": {"group_size": 64, "bits": 4}}',
                                 "model.safetensors": b"s" * 400_000})  # an MLX conversion
        rule = hf_front.throttle(200_000, repo_id=repo_id)
        job = client.post("/downloads", json={"provider": "mlx", "model": repo_id}).json()["id"]
        wait_for(lambda: (client.get(f"/downloads/{job}").json()["progress"] or {}).get("status") == "downloading")
        busy = client.delete(f"/models/huggingface/{repo_id}")
        assert busy.status_code == 409 and busy.json()["error_code"] == "download_running"
        hf_front.remove_rule(rule)
        assert read_ndjson(client, f"/downloads/{job}/events?format=ndjson")[-1]["status"] == "complete"
        assert client.delete(f"/models/mlx/{repo_id}").status_code == 200


def test_list_and_rm_commands(local):
    runner = CliRunner()
    args = ["--cache-dir", str(local["cache"]), "--ollama-host", local["ollama_url"],
            "--lmstudio-dir", str(local["lmstudio"])]
    as_json = runner.invoke(main, ["list", *args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    listed = {(m["provider"], m["name"]) for m in json.loads(as_json.output)["models"]}
    assert ("huggingface", local["plain"]) in listed and ("ollama", "served:1b") in listed
    table = runner.invoke(main, ["list", "mlx", *args])
    assert table.exit_code == 0 and local["mlx"] in table.output and local["plain"] not in table.output
    removed = runner.invoke(main, ["rm", "huggingface", local["plain"], *args, "-y"])
    assert removed.exit_code == 0 and "deleted" in removed.output
    missing = runner.invoke(main, ["rm", "huggingface", local["plain"], *args, "-y"])
    assert missing.exit_code == 1 and "not_found" in missing.output
    wrong = runner.invoke(main, ["list", "napster", *args])
    assert wrong.exit_code == 1 and "unsupported_provider" in wrong.output
