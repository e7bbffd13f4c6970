"""``gguf`` downloads into the Hugging Face cache: only the chosen files, verified,
with the progress contract, and resumable after a cancel."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import hf_hub_download, scan_cache_dir

from modelpull import DownloadStatus, download_model, plan_download


async def pull(hf_front, model, cache_dir, **options):
    return [e async for e in download_model(
        "gguf", model, base_url=hf_front.endpoint, cache_dir=cache_dir, **options)]


def file_gets(hf_front, repo_id):
    hf_front.wait_idle()
    return [r for r in hf_front.requests(method="GET") if r.repo_id == repo_id and r.file_path]


def check_contract(events):
    assert events[0].status is DownloadStatus.STARTING
    assert sum(e.is_terminal for e in events) == 1
    done = events[-1]
    assert done.status is DownloadStatus.COMPLETE, done.message
    assert done.percent == 100 and done.downloaded_bytes == done.total_bytes
    seen = [e.downloaded_bytes or 0 for e in events]
    assert seen == sorted(seen)
    return done


async def test_tag_fetches_only_that_quantization_and_its_projector(hf_front, tiny_gguf, tmp_path):
    hf_front.clear_log()
    events = await pull(hf_front, f"{tiny_gguf.repo_id}:q4_k_m", tmp_path)
    done = check_contract(events)
    assert done.total_bytes == tiny_gguf.size("Tiny-Q4_K_M.gguf", "mmproj-Tiny-F16.gguf")
    path = Path(done.path)
    assert path.name == "Tiny-Q4_K_M.gguf"
    assert path.read_bytes() == tiny_gguf.files["Tiny-Q4_K_M.gguf"]
    assert (path.parent / "mmproj-Tiny-F16.gguf").read_bytes() == tiny_gguf.files["mmproj-Tiny-F16.gguf"]
    assert sorted(r.file_path for r in file_gets(hf_front, tiny_gguf.repo_id)) == [
        "Tiny-Q4_K_M.gguf", "mmproj-Tiny-F16.gguf"]
    # it is an ordinary Hugging Face cache entry: huggingface_hub finds it offline
    cached = hf_hub_download(tiny_gguf.repo_id, "Tiny-Q4_K_M.gguf", cache_dir=tmp_path, local_files_only=True)
    assert Path(cached).resolve() == path.resolve()
    repos = {r.repo_id: r for r in scan_cache_dir(tmp_path).repos}
    assert {f.file_name for f in next(iter(repos[tiny_gguf.repo_id].revisions)).files} == {
        "Tiny-Q4_K_M.gguf", "mmproj-Tiny-F16.gguf"}


async def test_split_model_completes_with_the_first_part_as_path(hf_front, tiny_gguf, tmp_path):
    events = await pull(hf_front, f"{tiny_gguf.repo_id}:F16", tmp_path, mmproj=False)
    done = check_contract(events)
    assert done.total_bytes == tiny_gguf.size(*tiny_gguf.split)
    assert done.path.endswith(tiny_gguf.split[0])
    snapshot = Path(done.path).parent.parent
    for part in tiny_gguf.split:
        assert (snapshot / part).read_bytes() == tiny_gguf.files[part]
    # the second time everything is local: nothing is fetched again
    hf_front.clear_log()
    again = check_contract(await pull(hf_front, f"{tiny_gguf.repo_id}:F16", tmp_path, mmproj=False))
    assert again.path == done.path
    assert file_gets(hf_front, tiny_gguf.repo_id) == []


async def test_no_tag_download_states_the_choice_and_fetches_it(hf_front, tiny_gguf, tmp_path):
    events = await pull(hf_front, tiny_gguf.repo_id, tmp_path, mmproj=False)
    assert "no tag given: chose Q4_K_M" in events[0].message
    assert Path(check_contract(events).path).name == "Tiny-Q4_K_M.gguf"


async def test_split_model_resumes_after_cancel_asking_only_for_what_is_missing(hf_front, big_split, tmp_path):
    repo = big_split
    model = f"{repo.repo_id}:Q8_0"
    part_size = len(repo.files[repo.split[0]])
    # one file at a time, slowly: part 1 completes, part 2 is cut off half-way, part 3 never starts
    throttle = hf_front.throttle(150_000, repo_id=repo.repo_id)
    hf_front.clear_log()
    events = download_model("gguf", model, base_url=hf_front.endpoint, cache_dir=tmp_path,
                            max_parallel_files=1)
    last = None
    async for event in events:
        last = event
        if (event.downloaded_bytes or 0) > part_size * 1.25:
            break
    await events.aclose()
    assert last is not None and last.status is DownloadStatus.DOWNLOADING
    hf_front.remove_rule(throttle)
    first = file_gets(hf_front, repo.repo_id)
    assert [r.file_path for r in first] == repo.split[:2]

    plan = await plan_download("gguf", model, base_url=hf_front.endpoint, cache_dir=tmp_path)
    present = {item.name: item.present_bytes for item in plan.items}
    assert present[repo.split[0]] == part_size
    assert 0 < present[repo.split[1]] < part_size
    assert present[repo.split[2]] == 0
    assert not Path(plan.destination, repo.split[0]).exists()  # nothing published before all is verified

    hf_front.clear_log()
    done = check_contract([e async for e in download_model(
        "gguf", model, base_url=hf_front.endpoint, cache_dir=tmp_path)])
    second = file_gets(hf_front, repo.repo_id)
    assert sorted(r.file_path for r in second) == repo.split[1:]
    resumed = next(r for r in second if r.file_path == repo.split[1])
    assert resumed.range is not None and resumed.range.startswith(f"bytes={present[repo.split[1]]}-")
    assert sum(r.bytes_sent for r in second) == plan.missing_bytes
    snapshot = Path(done.path).parent
    for part in repo.split:
        assert (snapshot / part).read_bytes() == repo.files[part]
