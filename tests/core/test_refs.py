"""Model references are validated offline, by Ollama's and the Hub's rules."""

import pytest
from hypothesis import given, settings, strategies as st

from modelpull.errors import InvalidModel
from modelpull.refs import parse_hf_repo_id, parse_ollama_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gemma3", "registry.ollama.ai/library/gemma3:latest"),
        ("gemma3:1b", "registry.ollama.ai/library/gemma3:1b"),
        ("me/tiny:q4_K_M", "registry.ollama.ai/me/tiny:q4_K_M"),
        ("127.0.0.1:5000/library/tiny:1b", "127.0.0.1:5000/library/tiny:1b"),
        ("hf.co/org/Model-GGUF:Q4_K_M", "hf.co/org/Model-GGUF:Q4_K_M"),
        ("_x.y-z", "registry.ollama.ai/library/_x.y-z:latest"),
    ],
)
def test_ollama_names_parse_with_defaults(name, expected):
    assert str(parse_ollama_name(name)) == expected


@pytest.mark.parametrize(
    "name",
    ["", ":1b", "a/b/c/d", "bad name", "-lead", "a:b:c", "ns.dot/model", "m:" , "m:-x", "x" * 81,
     "a/:tag", "../etc", "model@sha256:abc", "ho st/ns/m"],
)
def test_invalid_ollama_names_are_rejected(name):
    with pytest.raises(InvalidModel):
        parse_ollama_name(name)


def test_short_name_drops_defaults():
    assert parse_ollama_name("registry.ollama.ai/library/gemma3:1b").short == "gemma3:1b"
    assert parse_ollama_name("me/m:t").short == "me/m:t"


@pytest.mark.parametrize("repo", ["org/model", "gpt2", "Qwen/Qwen2.5-0.5B-Instruct", "a_b/c.d"])
def test_valid_hf_repo_ids(repo):
    assert parse_hf_repo_id(repo) == repo


@pytest.mark.parametrize(
    "repo", ["", "org/", "/model", "a/b/c", "org/../x", "org/a--b", "org/x.", "org /x", "o" * 97, "org/-x"]
)
def test_invalid_hf_repo_ids(repo):
    with pytest.raises(InvalidModel):
        parse_hf_repo_id(repo)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_any_text_is_either_a_valid_name_or_invalid_model(text):
    for parse in (parse_ollama_name, parse_hf_repo_id):
        try:
            parse(text)
        except InvalidModel as exc:
            assert exc.code == "invalid_model"
            assert exc.message
