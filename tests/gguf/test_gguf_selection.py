"""Which files a GGUF reference picks: tags, file paths, the no-tag default, projectors.

Name parsing is checked offline; every choice against a repo is checked on
the test Hub (olah behind hf_front) through the public ``plan_download``.
"""

from __future__ import annotations

import pytest

from modelpull import DownloadStatus, download_model, plan_download
from modelpull.errors import IncompatibleModel, InvalidModel, ModelNotFound
from modelpull.providers.gguf import parse_gguf_ref, quantization_of


@pytest.mark.parametrize(
    ("filename", "label"),
    [
        ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("qwen2.5-0.5b-instruct-q4_k_m.gguf", "Q4_K_M"),
        ("llama-2-7b.Q5_K_S.gguf", "Q5_K_S"),
        ("Qwen_Qwen3-8B-IQ4_XS.gguf", "IQ4_XS"),
        ("gemma-3-4b-it-qat-q4_0.gguf", "Q4_0"),
        ("model-Q4_K.gguf", "Q4_K"),
        ("Model-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
        ("m-IQ2_XXS.gguf", "IQ2_XXS"),
        ("m-Q4_0_4_4.gguf", "Q4_0_4_4"),
        ("m-BF16.gguf", "BF16"),
        ("ggml-model-f16.gguf", "F16"),
        ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
        ("Q8_0/Big-Q8_0-00002-of-00003.gguf", "Q8_0"),
        ("mmproj-model-f16.gguf", "F16"),
        ("Qwen2.5-VL-7B-Instruct-Q6_K_L.gguf", "Q6_K_L"),
        ("model.gguf", None),
    ],
)
def test_quantization_is_read_from_the_file_name(filename, label):
    assert quantization_of(filename) == label


def test_references_parse_offline():
    assert parse_gguf_ref("org/repo:q4_k_m").tag == "q4_k_m"
    assert parse_gguf_ref("hf.co/org/repo:Q8_0").repo_id == "org/repo"
    assert parse_gguf_ref("org/repo:latest").tag is None
    ref = parse_gguf_ref("org/repo/sub/dir/x-Q4_0.gguf")
    assert (ref.repo_id, ref.path, ref.tag) == ("org/repo", "sub/dir/x-Q4_0.gguf", None)


@pytest.mark.parametrize(
    "model", ["", "org/repo:", "org/repo:Q4 K", "org/repo/readme.md", "org/repo/../x.gguf", "a--b/c:Q4_0"]
)
async def test_bad_references_fail_before_any_network_call(model):
    for provider in ("gguf", "lmstudio"):
        events = [e async for e in download_model(provider, model, base_url="http://127.0.0.1:9")]
        assert [e.status for e in events] == [DownloadStatus.STARTING, DownloadStatus.ERROR]
        assert events[-1].error_code == "invalid_model", events[-1].message


async def plan(hf_front, model, **options):
    return await plan_download("gguf", model, base_url=hf_front.endpoint, **options)


def names(p):
    return [item.name for item in p.items]


async def test_tag_picks_that_quantization_case_insensitively(hf_front, tiny_gguf):
    for tag in ("Q4_K_M", "q4_k_m", "Q4_k_M"):
        p = await plan(hf_front, f"{tiny_gguf.repo_id}:{tag}")
        assert names(p) == ["Tiny-Q4_K_M.gguf", "mmproj-Tiny-F16.gguf"]
    p = await plan(hf_front, f"{tiny_gguf.repo_id}:iq4_xs")
    assert names(p)[0] == "Tiny-IQ4_XS.gguf"
    assert p.total_bytes == tiny_gguf.size("Tiny-IQ4_XS.gguf", "mmproj-Tiny-F16.gguf")


async def test_a_tag_is_an_exact_token_so_q4_k_matches_nothing(hf_front, tiny_gguf):
    with pytest.raises(ModelNotFound) as err:
        await plan(hf_front, f"{tiny_gguf.repo_id}:Q4_K")
    message = err.value.message
    assert err.value.code == "not_found"
    for label, size in (("Q2_K", "21.0 kB"), ("Q4_K_S", "30.0 kB"), ("Q4_K_M", "32.0 kB"),
                        ("IQ4_XS", "28.0 kB"), ("Q8_0", "50.0 kB"), ("BF16", "90.0 kB")):
        assert f"{label} {size}" in message
    assert "F16 97.0 kB (3 parts)" in message
    assert "mmproj-Tiny-F16.gguf" in message


async def test_not_found_reaches_the_caller_as_one_error_event(hf_front, tiny_gguf, tmp_path):
    events = [e async for e in download_model(
        "gguf", f"{tiny_gguf.repo_id}:Q3_K_M", base_url=hf_front.endpoint, cache_dir=tmp_path)]
    assert [e.status for e in events] == [DownloadStatus.STARTING, DownloadStatus.ERROR]
    assert events[-1].error_code == "not_found"
    assert "Q4_K_M 32.0 kB" in events[-1].message
    assert not list(tmp_path.rglob("*.gguf"))


async def test_no_tag_chooses_q4_k_m_and_says_so(hf_front, tiny_gguf, tmp_path):
    p = await plan(hf_front, tiny_gguf.repo_id)
    assert names(p) == ["Tiny-Q4_K_M.gguf", "mmproj-Tiny-F16.gguf"]
    assert p.notes[0].startswith("No tag given: chose Q4_K_M")
    events = [e async for e in download_model(
        "gguf", tiny_gguf.repo_id, base_url=hf_front.endpoint, cache_dir=tmp_path, dry_run=True)]
    assert events[0].status is DownloadStatus.STARTING
    assert "no tag given: chose Q4_K_M (" in events[0].message
    assert events[0].total_bytes == tiny_gguf.size("Tiny-Q4_K_M.gguf", "mmproj-Tiny-F16.gguf")


@pytest.mark.parametrize(
    ("case", "expected"),
    [("nearest-4bit", "m.Q4_K_S.gguf"), ("smallest-above", "m-Q5_K_M.gguf"),
     ("largest-below", "m-Q3_K_S.gguf")],
)
async def test_no_tag_without_q4_k_m_follows_the_documented_order(hf_front, fallback_repos, case, expected):
    p = await plan(hf_front, fallback_repos[case].repo_id)
    assert names(p) == [expected]
    assert p.notes[0].startswith(f"No tag given: chose {quantization_of(expected)}")


async def test_split_model_comes_whole_in_one_total(hf_front, tiny_gguf):
    p = await plan(hf_front, f"{tiny_gguf.repo_id}:f16", mmproj=False)
    assert names(p) == tiny_gguf.split
    assert p.total_bytes == tiny_gguf.size(*tiny_gguf.split)


async def test_projector_matches_the_model_precision_and_can_be_turned_off(hf_front, tiny_gguf):
    assert names(await plan(hf_front, f"{tiny_gguf.repo_id}:BF16")) == [
        "Tiny-BF16.gguf", "mmproj-Tiny-BF16.gguf"]
    assert names(await plan(hf_front, f"{tiny_gguf.repo_id}:F16"))[-1] == "mmproj-Tiny-F16.gguf"
    assert names(await plan(hf_front, f"{tiny_gguf.repo_id}:Q8_0"))[-1] == "mmproj-Tiny-F16.gguf"
    for off in (False, "false", "0"):
        assert names(await plan(hf_front, f"{tiny_gguf.repo_id}:Q8_0", mmproj=off)) == ["Tiny-Q8_0.gguf"]


async def test_a_file_path_names_one_file_and_a_split_part_brings_its_siblings(hf_front, tiny_gguf):
    p = await plan(hf_front, f"{tiny_gguf.repo_id}/Tiny-Q2_K.gguf", mmproj=False)
    assert names(p) == ["Tiny-Q2_K.gguf"]
    p = await plan(hf_front, f"{tiny_gguf.repo_id}/mmproj-Tiny-BF16.gguf")
    assert names(p) == ["mmproj-Tiny-BF16.gguf"]
    p = await plan(hf_front, f"{tiny_gguf.repo_id}/{tiny_gguf.split[1]}", mmproj=False)
    assert names(p) == tiny_gguf.split
    with pytest.raises(ModelNotFound) as err:
        await plan(hf_front, f"{tiny_gguf.repo_id}/Tiny-Q4_K.gguf")
    assert "Q4_K_M 32.0 kB" in err.value.message


async def test_dry_run_plan_lists_every_quantization_with_sizes(hf_front, tiny_gguf):
    p = await plan(hf_front, f"{tiny_gguf.repo_id}:Q8_0")
    listing = next(n for n in p.notes if n.startswith("Quantizations:"))
    assert "Q8_0 50.0 kB (chosen)" in listing
    assert "Q2_K 21.0 kB" in listing and "F16 97.0 kB (3 parts)" in listing
    assert any("mmproj=false" in n for n in p.notes)
    assert p.to_dict()["notes"] == p.notes


async def test_repo_without_gguf_files_is_incompatible(hf_front, safetensors_only):
    with pytest.raises(IncompatibleModel):
        await plan(hf_front, safetensors_only.repo_id)


async def test_sizes_come_from_head_requests_when_the_hub_gives_none(olah, tiny_gguf):
    # olah's model_info carries no sizes: the provider asks each file (HEAD)
    p = await plan_download("gguf", f"{tiny_gguf.repo_id}:Q4_K_S", base_url=olah.endpoint, mmproj=False)
    assert names(p) == ["Tiny-Q4_K_S.gguf"]
    assert p.total_bytes == 30_000


async def test_unknown_repo_is_not_found(hf_front):
    with pytest.raises(ModelNotFound):
        await plan(hf_front, "modelpull-gguf/Does-Not-Exist:Q4_K_M")


def test_lmstudio_needs_a_publisher():
    with pytest.raises(InvalidModel):
        from modelpull.api import make_provider

        make_provider("lmstudio", "lonely-repo:Q4_K_M")


async def test_a_label_found_twice_asks_for_a_file_path(hf_front, odd_repos):
    repo = odd_repos["twice"].repo_id
    for model in (f"{repo}:q4_k_m", repo):
        with pytest.raises(InvalidModel) as err:
            await plan(hf_front, model)
        assert "v1/Odd-Q4_K_M.gguf" in err.value.message and "v2/Odd-Q4_K_M.gguf" in err.value.message
    assert names(await plan(hf_front, f"{repo}/v2/Odd-Q4_K_M.gguf")) == ["v2/Odd-Q4_K_M.gguf"]


async def test_a_split_model_missing_a_part_is_refused(hf_front, odd_repos):
    with pytest.raises(ModelNotFound) as err:
        await plan(hf_front, f"{odd_repos['twice'].repo_id}:Q6_K")
    assert "lacks 1 part" in err.value.message


async def test_a_repo_with_one_unlabeled_file_gives_that_file(hf_front, odd_repos):
    p = await plan(hf_front, odd_repos["unlabeled"].repo_id)
    assert names(p) == ["model.gguf"]
    assert "only GGUF model" in p.notes[0]
