"""The served-model list over loopback: 404 model_not_found, '*', GET /v1/models, 400 unrecognized arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from batchchat.simulator import Simulator, SimulatorConfig
from batchchat.simulator.models import DEFAULT_MODELS

MSG = [{"role": "user", "content": "hi"}]
ROUTES = [
    ("/chat/completions", {"messages": MSG}),
    ("/completions", {"prompt": "once"}),
    ("/embeddings", {"input": "text"}),
    ("/responses", {"input": "hi"}),
]


def post(sim: Simulator, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(sim.base_url + path, json=body, timeout=5)


def test_the_default_list_has_current_openai_models() -> None:
    wanted = [
        "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3", "o3-mini", "o4-mini", "gpt-5",
        "gpt-5-mini", "gpt-5-nano", "text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002",
        "gpt-3.5-turbo", "gpt-3.5-turbo-instruct", "davinci-002",
    ]
    assert set(wanted) <= set(DEFAULT_MODELS) and len(set(DEFAULT_MODELS)) == len(DEFAULT_MODELS)
    assert SimulatorConfig().models == DEFAULT_MODELS


@pytest.mark.parametrize(("path", "fields"), ROUTES)
def test_an_unknown_model_gets_openais_404(
    simulator: Callable[..., Simulator], path: str, fields: dict[str, Any]
) -> None:
    sim = simulator(rpm=600, tpm=100_000)
    r = post(sim, path, {"model": "gpt-9-ultra", **fields})
    assert r.status_code == 404
    assert r.json() == {
        "error": {
            "message": "The model `gpt-9-ultra` does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        }
    }
    assert not any(name.startswith("x-ratelimit") for name in r.headers)
    stats = sim.stats()
    assert stats["responses"] == {"404": 1} and stats["models"] == {} and stats["tokens_admitted"] == 0
    assert post(sim, path, {"model": "gpt-4o-mini", **fields}).status_code == 200


def test_any_model_with_star_and_a_list_of_ones_own(simulator: Callable[..., Simulator]) -> None:
    anything = simulator(models=("*",))
    assert post(anything, "/chat/completions", {"model": "own-model", "messages": MSG}).status_code == 200
    listed = httpx.get(anything.base_url + "/models").json()["data"]
    assert [m["id"] for m in listed] == list(DEFAULT_MODELS)  # nothing named: the default list is shown
    own = simulator(models=("llama-3-8b", "*"), model_limits={"gpt-4o": (60, None)})
    listed = httpx.get(own.base_url + "/models").json()
    assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == ["llama-3-8b", "gpt-4o"]
    assert post(own, "/chat/completions", {"model": "whatever", "messages": MSG}).status_code == 200


def test_models_list_and_limit_models_are_served(simulator: Callable[..., Simulator]) -> None:
    sim = simulator(models=("llama-3-8b",), model_limits={"mistral-7b": (600, None)})
    data = httpx.get(sim.base_url + "/models").json()["data"]
    assert [m["id"] for m in data] == ["llama-3-8b", "mistral-7b"]
    assert all(m["object"] == "model" and isinstance(m["created"], int) and m["owned_by"] for m in data)
    assert post(sim, "/chat/completions", {"model": "llama-3-8b", "messages": MSG}).status_code == 200
    ok = post(sim, "/chat/completions", {"model": "mistral-7b", "messages": MSG})
    assert ok.status_code == 200 and ok.headers["x-ratelimit-limit-requests"] == "600"
    assert post(sim, "/chat/completions", {"model": "gpt-4o-mini", "messages": MSG}).status_code == 404
    default = simulator()
    ids = [m["id"] for m in httpx.get(default.base_url + "/models").json()["data"]]
    assert ids == list(DEFAULT_MODELS)


@pytest.mark.parametrize(
    ("path", "body", "argument"),
    [
        ("/chat/completions", {"model": "gpt-4o-mini", "messages": MSG, "prompt": "hi"}, "prompt"),
        ("/chat/completions", {"model": "gpt-4o-mini", "input": "hi"}, "input"),
        ("/embeddings", {"model": "text-embedding-3-small", "input": "x", "messages": MSG}, "messages"),
        ("/embeddings", {"model": "text-embedding-3-small", "prompt": "x"}, "prompt"),
        ("/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "x", "messages": MSG}, "messages"),
        ("/responses", {"model": "gpt-4o-mini", "input": "x", "messages": MSG}, "messages"),
    ],
)
def test_arguments_of_another_endpoint_get_openais_400(
    simulator: Callable[..., Simulator], path: str, body: dict[str, Any], argument: str
) -> None:
    sim = simulator()
    r = post(sim, path, body)
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": f"Unrecognized request argument supplied: {argument}",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }


def test_ordinary_arguments_are_accepted(simulator: Callable[..., Simulator]) -> None:
    sim = simulator()
    body = {"model": "gpt-4o-mini", "messages": MSG, "temperature": 0.2, "top_p": 1, "seed": 3, "user": "u",
            "response_format": {"type": "json_object"}, "max_completion_tokens": 5, "metadata": {"a": "b"}}
    assert post(sim, "/chat/completions", body).status_code == 200
    embed = {"model": "text-embedding-3-large", "input": ["a", "b"], "dimensions": 4, "user": "u"}
    assert post(sim, "/embeddings", embed).status_code == 200
    stored = {"model": "gpt-4o-mini", "input": "x", "prompt": {"id": "pmpt_1"}, "instructions": "be brief"}
    assert post(sim, "/responses", stored).status_code == 200  # the Responses API has a `prompt` of its own


@pytest.mark.parametrize(
    "fields",
    [
        {"models": ()},
        {"models": ("a,b",)},
        {"models": ("",)},
        {"model_limits": {"*": (1, 1)}},
        {"model_limits": {"gpt-4o": (0, None)}},
        {"limit_kind": "sliding"},
        {"retry_after_style": "azure"},
        {"request_id_header": "x request id"},
        {"request_id_header": ""},
        {"workers": 0},
    ],
)
def test_config_refuses_bad_values(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SimulatorConfig(**fields)
