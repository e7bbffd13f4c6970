"""Bad input: one STARTING, one ERROR with a stable code, no exception, no network."""

import pytest

from modelpull import DownloadProgress, DownloadStatus, download_model, plan_download
from modelpull.errors import ERROR_CODES, ModelpullError
from modelpull._secrets import Secret


async def collect(*args, **kwargs):
    return [event async for event in download_model(*args, **kwargs)]


async def test_unknown_provider_is_an_error_event_listing_supported_ones():
    events = await collect("openai", "gpt-4")
    assert [e.status for e in events] == [DownloadStatus.STARTING, DownloadStatus.ERROR]
    error = events[-1]
    assert error.error_code == "unsupported_provider"
    for name in ("huggingface", "mlx", "ollama"):
        assert name in error.message


@pytest.mark.parametrize(
    ("provider", "model"),
    [("ollama", "bad name!"), ("ollama", ""), ("huggingface", "a/b/c"), ("hf", "../../etc"), ("mlx", None)],
)
async def test_invalid_model_names_fail_before_any_network_call(provider, model):
    # base_url points at a port nothing listens on: an attempted call would be connection_failed
    events = await collect(provider, model, base_url="http://127.0.0.1:9")
    assert events[-1].status is DownloadStatus.ERROR
    assert events[-1].error_code == "invalid_model"
    assert sum(e.is_terminal for e in events) == 1


async def test_unknown_option_is_rejected_with_the_accepted_list():
    events = await collect("huggingface", "org/model", colour="blue")
    assert events[-1].error_code == "invalid_option"
    assert "revision" in events[-1].message


async def test_unreachable_hub_names_the_url():
    events = await collect("huggingface", "org/model", base_url="http://127.0.0.1:9")
    assert events[-1].error_code == "connection_failed"
    assert "http://127.0.0.1:9" in events[-1].message


async def test_unreachable_ollama_names_the_url():
    events = await collect("ollama", "gemma3:1b", base_url="http://127.0.0.1:9")
    assert events[-1].error_code == "connection_failed"
    assert "127.0.0.1:9" in events[-1].message


async def test_plan_download_raises_typed_errors():
    with pytest.raises(ModelpullError) as info:
        await plan_download("ollama", "no good")
    assert info.value.code == "invalid_model"


def test_progress_dataclass_field_order_matches_the_replaced_library():
    import dataclasses

    names = [f.name for f in dataclasses.fields(DownloadProgress)]
    assert names[:5] == ["status", "message", "percent", "downloaded_bytes", "total_bytes"]
    assert names[5:10] == ["error_code", "path", "speed_bps", "eta_seconds", "current"]
    assert [s.value for s in DownloadStatus] == ["starting", "downloading", "verifying", "complete", "error"]
    assert DownloadProgress(DownloadStatus.STARTING, "x").percent is None


def test_error_codes_are_stable():
    for code in ("unsupported_provider", "invalid_model", "not_found", "revision_not_found", "gated",
                 "auth_required", "incompatible_model", "connection_failed", "server_error", "timeout",
                 "incomplete", "checksum_mismatch", "disk_full"):
        assert code in ERROR_CODES


async def test_token_is_not_in_messages_or_reprs():
    canary = "hf_CANARYtoken1234567890"
    events = await collect("huggingface", "org/model", token=canary, base_url=f"http://127.0.0.1:9/{canary}")
    for event in events:
        assert canary not in repr(event)
        assert canary not in str(event.to_dict())
    assert canary not in repr(Secret(canary))
    assert canary not in str(Secret(canary))
