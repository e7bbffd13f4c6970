"""ollama-registry offline and cache-first: a model complete in Ollama's store never needs the registry."""

from __future__ import annotations

from modelpull import DownloadStatus, download_model
from tests.servers.registry import RegistryFront


async def collect(*args, **kwargs):
    return [event async for event in download_model(*args, **kwargs)]


async def test_a_registry_gone_serves_the_model_from_the_store(registry, models_dir):
    model = registry.push_tiny(weights=50_000)
    with RegistryFront(registry.url) as front:
        name = f"{front.netloc}/{model.repo}:{model.tag}"
        first = await collect("ollama-registry", name, insecure=True, models_dir=str(models_dir))
        assert first[-1].status is DownloadStatus.COMPLETE, first[-1].message
    # the front is gone: its port refuses connections
    events = await collect("ollama-registry", name, insecure=True, models_dir=str(models_dir))
    assert [e.status for e in events] == [DownloadStatus.STARTING, DownloadStatus.COMPLETE], events
    assert events[-1].path == first[-1].path
    assert "could not be used" in events[-1].message and front.netloc in events[-1].message
    assert events[-1].downloaded_bytes == events[-1].total_bytes == model.total_size


async def test_offline_option_serves_the_store_and_asks_nothing(registry, front, models_dir):
    model = registry.push_tiny(weights=50_000)
    name = f"{front.netloc}/{model.repo}:{model.tag}"
    first = await collect("ollama-registry", name, insecure=True, models_dir=str(models_dir))
    assert first[-1].status is DownloadStatus.COMPLETE
    asked = len(front.seen)
    events = await collect("ollama-registry", name, insecure=True, models_dir=str(models_dir), offline=True)
    assert events[-1].status is DownloadStatus.COMPLETE and "offline" in events[-1].message
    assert len(front.seen) == asked


async def test_offline_with_a_missing_blob_names_it(registry, front, models_dir):
    model = registry.push_tiny(weights=50_000)
    name = f"{front.netloc}/{model.repo}:{model.tag}"
    first = await collect("ollama-registry", name, insecure=True, models_dir=str(models_dir))
    assert first[-1].status is DownloadStatus.COMPLETE
    weights = model.layer_digests[0]
    (models_dir / "blobs" / weights.replace(":", "-")).unlink()
    events = await collect("ollama-registry", name, insecure=True, models_dir=str(models_dir), offline=True)
    assert events[-1].error_code == "offline"
    assert weights.split(":")[1][:12] in events[-1].message


async def test_offline_with_no_such_model(models_dir):
    events = await collect("ollama-registry", "127.0.0.1:9/library/none:1b", insecure=True,
                           models_dir=str(models_dir), offline=True)
    assert events[-1].error_code == "offline" and "nothing of it" in events[-1].message
