"""The simulator's Batch API (/v1/files, /v1/batches): shapes, lifecycle, limits, stats.

Every test drives the batch timeline with a fake clock: the real server answers over loopback,
and a batch's state is worked out from the clock on each request, so nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from batchchat.simulator import Simulator, SimulatorConfig
from batchchat.simulator.batch_config import BatchConfig, batch_args, parse_enqueued_limits
from batchchat.simulator.multipart import MultipartError, parse_form, parse_header_params
from batchchat.simulator.server import SimulatorApp

CHAT = "/v1/chat/completions"
EMBED = "/v1/embeddings"
T0 = 1000.0


class FakeClock:
    """A settable clock (seconds); the server thread reads it, the test moves it."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def at(self, dt: float) -> None:
        self.t = T0 + dt


def chat_line(i: int, model: str = "gpt-4o-mini", content: str | None = None, **extra: Any) -> dict[str, Any]:
    body = {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": content or f"Say {i}."}]}
    return {"custom_id": f"r{i}", "method": "POST", "url": CHAT, "body": body, **extra}


def jsonl(lines: list[Any]) -> bytes:
    return b"".join((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines)


def parse_jsonl(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines()]


class Api:
    """A thin client of the simulator's Files and Batches routes."""

    def __init__(self, sim: Simulator, clock: FakeClock) -> None:
        self.sim = sim
        self.clock = clock
        self.http = httpx.Client(base_url=sim.base_url, timeout=10)

    def upload(self, data: bytes, name: str = "in.jsonl", purpose: str = "batch") -> httpx.Response:
        return self.http.post("/files", files={"file": (name, data, "application/jsonl")}, data={"purpose": purpose})

    def file_id(self, lines: list[Any], name: str = "in.jsonl") -> str:
        r = self.upload(jsonl(lines), name)
        assert r.status_code == 200, r.text
        return r.json()["id"]

    def create(self, file_id: str, endpoint: str = CHAT, **extra: Any) -> httpx.Response:
        return self.http.post(
            "/batches", json={"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h", **extra}
        )

    def batch(self, lines: list[Any], endpoint: str = CHAT, **extra: Any) -> dict[str, Any]:
        r = self.create(self.file_id(lines), endpoint, **extra)
        assert r.status_code == 200, r.text
        return r.json()

    def get(self, batch_id: str) -> dict[str, Any]:
        r = self.http.get(f"/batches/{batch_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def content(self, file_id: str) -> list[dict[str, Any]]:
        r = self.http.get(f"/files/{file_id}/content")
        assert r.status_code == 200, r.text
        return parse_jsonl(r.content)


@pytest.fixture
def start(simulator: Callable[..., Simulator]) -> Iterator[Callable[..., Api]]:
    """`start(**batch_knobs)` -> an `Api` on a fresh simulator whose clock the test moves."""
    clients: list[Api] = []

    def make(config: dict[str, Any] | None = None, **batch: Any) -> Api:
        clock = FakeClock()
        knobs = {"validate_seconds": 1.0, "lines_per_second": 10.0, "finalize_seconds": 1.0, "cancel_seconds": 1.0}
        knobs.update(batch)
        api = Api(simulator(clock=clock, batch=BatchConfig(**knobs), **(config or {})), clock)
        clients.append(api)
        return api

    yield make
    for api in clients:
        api.http.close()


# ---- files -------------------------------------------------------------------------------------


def test_files_upload_list_get_content_delete(start: Callable[..., Api]) -> None:
    api = start()
    data = jsonl([chat_line(i) for i in range(3)])
    r = api.upload(data, "first.jsonl")
    assert r.status_code == 200
    first = r.json()
    assert first["id"].startswith("file-") and first["object"] == "file"
    assert first["bytes"] == len(data) and first["filename"] == "first.jsonl" and first["purpose"] == "batch"
    assert first["status"] == "processed" and isinstance(first["created_at"], int)
    api.clock.at(1)
    second = api.upload(b"notes", "notes.txt", purpose="user_data").json()
    third = api.upload(data, "third.jsonl").json()

    listed = api.http.get("/files").json()
    assert listed["object"] == "list" and listed["has_more"] is False
    assert [f["id"] for f in listed["data"]] == [third["id"], second["id"], first["id"]]  # newest first
    batch_only = api.http.get("/files", params={"purpose": "batch", "order": "asc"}).json()
    assert [f["id"] for f in batch_only["data"]] == [first["id"], third["id"]]
    page = api.http.get("/files", params={"limit": 1, "after": third["id"]}).json()
    assert [f["id"] for f in page["data"]] == [second["id"]] and page["has_more"] is True
    assert page["first_id"] == page["last_id"] == second["id"]

    assert api.http.get(f"/files/{first['id']}").json() == first
    content = api.http.get(f"/files/{first['id']}/content")
    assert content.status_code == 200 and content.content == data

    deleted = api.http.delete(f"/files/{first['id']}")
    assert deleted.json() == {"id": first["id"], "object": "file", "deleted": True}
    for r in (
        api.http.get(f"/files/{first['id']}"),
        api.http.get(f"/files/{first['id']}/content"),
        api.http.delete(f"/files/{first['id']}"),
    ):
        assert r.status_code == 404 and r.json()["error"]["message"] == f"No such File object: {first['id']}"
    assert api.http.put("/files").status_code == 405
    assert api.http.get("/files/x/nothing").status_code == 404

    stats = api.sim.stats()["batch"]
    assert stats["files_uploaded"] == 3 and stats["files_deleted"] == 1
    assert stats["bytes_uploaded"] == 2 * len(data) + len(b"notes")
    assert stats["uploads_by_filename"] == [["first.jsonl", 1], ["notes.txt", 1], ["third.jsonl", 1]]


def test_bad_uploads_get_400(start: Callable[..., Api]) -> None:
    api = start(max_file_bytes=100)
    url = "/files"
    cases = [
        api.http.post(url, json={"purpose": "batch"}),  # not multipart
        api.http.post(url, content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"}),
        api.http.post(url, files={"file": ("a.jsonl", b"{}")}),  # no purpose
        api.http.post(url, files={"file": ("a.jsonl", b"{}")}, data={"purpose": "nope"}),
        api.http.post(url, data={"purpose": "batch"}, files={"other": ("a.jsonl", b"{}")}),  # no file part
        api.upload(b"{}", "a.csv"),  # a batch file must be .jsonl
        api.upload(b"x" * 101, "big.jsonl"),
    ]
    assert [r.status_code for r in cases] == [400] * len(cases)
    codes = [r.json()["error"]["code"] for r in cases]
    assert codes == [None, None, "missing_required_parameter", "invalid_value", "missing_required_parameter",
                     "invalid_file_format", "file_too_large"]
    assert "multipart/form-data" in cases[0].json()["error"]["message"]
    assert api.upload(b"x" * 100, "fits.jsonl").status_code == 200
    assert api.sim.stats()["batch"]["uploads_rejected"] == len(cases)


def test_multipart_parser() -> None:
    body = (
        b"preamble\r\n--B\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
        b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a;b.jsonl\"; "
        b"filename*=UTF-8''%C3%A9.jsonl\r\n"
        b"Content-Type: application/jsonl\r\n\r\nline1\r\nline2\r\n\r\n--B--\r\n"
    )
    form = parse_form('multipart/form-data; boundary="B"', body)
    assert form["purpose"].data == b"batch" and form["purpose"].filename is None
    assert form["file"].filename == "é.jsonl" and form["file"].data == b"line1\r\nline2\r\n"
    assert form["file"].content_type == "application/jsonl"
    assert parse_header_params('form-data; name="a\\"b"; x=1') == ("form-data", {"name": 'a"b', "x": "1"})
    for ctype, bad in [
        ("text/plain", body),
        ("multipart/form-data", body),  # no boundary
        ("multipart/form-data; boundary=B", b"--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end"),
        ("multipart/form-data; boundary=B", b"--B\r\nX: y\r\n\r\nv\r\n--B--"),  # no Content-Disposition
        ("multipart/form-data; boundary=B", b"nothing here"),
    ]:
        with pytest.raises(MultipartError):
            parse_form(ctype, bad)


# ---- the lifecycle ------------------------------------------------------------------------------


def test_lifecycle_to_completed_with_output_like_the_online_route(start: Callable[..., Api]) -> None:
    api = start(config={"rpm": 1, "tpm": 50})  # the online limiter would refuse most of this batch
    lines = [chat_line(i) for i in range(20)]
    created = api.batch(lines, metadata={"job": "j1", "part": "0"})
    assert created["status"] == "validating" and created["object"] == "batch"
    assert created["id"].startswith("batch_") and created["endpoint"] == CHAT
    assert created["completion_window"] == "24h" and created["metadata"] == {"job": "j1", "part": "0"}
    assert created["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert created["expires_at"] == created["created_at"] + 60
    assert created["output_file_id"] is None and created["error_file_id"] is None and created["errors"] is None
    for key in ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at",
                "cancelled_at"):
        assert created[key] is None
    bid = created["id"]

    api.clock.at(0.99)
    assert api.get(bid)["status"] == "validating"
    api.clock.at(1.0)
    b = api.get(bid)
    assert b["status"] == "in_progress" and b["request_counts"] == {"total": 20, "completed": 0, "failed": 0}
    assert b["in_progress_at"] == created["created_at"] + 1 and b["model"] == "gpt-4o-mini"
    api.clock.at(1.55)
    assert api.get(bid)["request_counts"] == {"total": 20, "completed": 5, "failed": 0}
    api.clock.at(3.0)  # 20 lines at 10/s: done at +3 s
    b = api.get(bid)
    assert b["status"] == "finalizing" and b["request_counts"]["completed"] == 20 and b["output_file_id"] is None
    assert b["finalizing_at"] == created["created_at"] + 3
    api.clock.at(4.0)
    b = api.get(bid)
    assert b["status"] == "completed" and b["completed_at"] == created["created_at"] + 4
    assert b["request_counts"] == {"total": 20, "completed": 20, "failed": 0}
    assert b["error_file_id"] is None and b["output_file_id"].startswith("file-")

    out_file = api.http.get(f"/files/{b['output_file_id']}").json()
    assert out_file["purpose"] == "batch_output" and out_file["filename"] == f"{bid}_output.jsonl"
    out = api.content(b["output_file_id"])
    assert [line["custom_id"] for line in out] == [f"r{i}" for i in range(20)]
    assert len({line["id"] for line in out}) == 20
    first = out[0]
    assert list(first) == ["id", "custom_id", "response", "error"] and first["id"].startswith("batch_req_")
    assert first["error"] is None and first["response"]["status_code"] == 200
    assert first["response"]["request_id"].startswith("req_")
    body = first["response"]["body"]
    assert body["object"] == "chat.completion" and body["model"] == "gpt-4o-mini"

    # the same generator as the online route: same seed, same body -> same answer
    online = api.http.post("/chat/completions", json=lines[0]["body"])
    assert online.status_code == 200
    assert online.json()["usage"] == body["usage"]
    assert online.json()["choices"][0]["message"] == body["choices"][0]["message"]
    usage = b["usage"]
    assert usage["input_tokens"] == sum(line["response"]["body"]["usage"]["prompt_tokens"] for line in out)
    assert usage["output_tokens"] == sum(line["response"]["body"]["usage"]["completion_tokens"] for line in out)
    # batch lines were not charged to the online limiter: only the one online request was
    stats = api.sim.stats()
    assert stats["tokens_admitted"] == online.json()["usage"]["prompt_tokens"] + 16
    assert stats["batch"]["lines_completed"] == 20 and stats["batch"]["final"] == {"completed": 1}


def test_embeddings_and_other_endpoints(start: Callable[..., Api]) -> None:
    api = start()
    lines = [{"custom_id": f"e{i}", "method": "POST", "url": EMBED,
              "body": {"model": "text-embedding-3-small", "input": ["a", "b"] if i else "c"}} for i in range(3)]
    bid = api.batch(lines, EMBED)["id"]
    responses = [{"custom_id": "x", "method": "POST", "url": "/v1/responses",
                  "body": {"model": "gpt-4o-mini", "input": "hello", "max_output_tokens": 8}}]
    rid = api.batch(responses, "/v1/responses")["id"]
    completions = [{"custom_id": "c", "method": "POST", "url": "/v1/completions",
                    "body": {"model": "gpt-4o-mini", "prompt": ["p", "q"], "max_tokens": 4}}]
    cid = api.batch(completions, "/v1/completions")["id"]
    api.clock.at(10)
    out = api.content(api.get(bid)["output_file_id"])
    assert [len(line["response"]["body"]["data"]) for line in out] == [1, 2, 2]
    assert out[0]["response"]["body"]["object"] == "list"
    assert api.content(api.get(rid)["output_file_id"])[0]["response"]["body"]["object"] == "response"
    choices = api.content(api.get(cid)["output_file_id"])[0]["response"]["body"]["choices"]
    assert len(choices) == 2


def test_partial_failures_go_to_the_error_file(start: Callable[..., Api]) -> None:
    runs = []
    for _ in range(2):  # same seed, same batch number: the same lines fail
        api = start(failure_rate=0.3)
        lines = [chat_line(i) for i in range(40)]
        lines[5]["body"] = {"model": "gpt-4o-mini"}  # no messages: a 400 from the endpoint
        bid = api.batch(lines)["id"]
        api.clock.at(20)
        b = api.get(bid)
        assert b["status"] == "completed"
        counts = b["request_counts"]
        out, err = api.content(b["output_file_id"]), api.content(b["error_file_id"])
        assert counts["total"] == 40 and counts["completed"] == len(out) and counts["failed"] == len(err)
        assert 4 <= len(err) <= 25
        assert {line["custom_id"] for line in out} | {line["custom_id"] for line in err} == {
            f"r{i}" for i in range(40)
        }
        invalid = next(line for line in err if line["custom_id"] == "r5")
        assert invalid["error"] is None and invalid["response"]["status_code"] == 400
        assert invalid["response"]["body"]["error"]["param"] == "messages"
        server = [line for line in err if line["custom_id"] != "r5"]
        assert all(line["response"]["status_code"] == 500 and line["error"] is None for line in server)
        assert server[0]["response"]["body"]["error"]["type"] == "server_error"
        runs.append(sorted(line["custom_id"] for line in err))
        stats = api.sim.stats()["batch"]
        assert stats["lines_failed"] == len(err) and stats["lines_completed"] == len(out)
    assert runs[0] == runs[1]


def test_all_failed_batch_is_completed_without_an_output_file(start: Callable[..., Api]) -> None:
    api = start(fail_all=True)
    bid = api.batch([chat_line(i) for i in range(5)])["id"]
    api.clock.at(10)
    b = api.get(bid)
    assert b["status"] == "completed" and b["output_file_id"] is None
    assert b["request_counts"] == {"total": 5, "completed": 0, "failed": 5}
    err = api.content(b["error_file_id"])
    assert len(err) == 5 and {line["response"]["status_code"] for line in err} == {500}


def test_expiry_keeps_done_lines_and_fails_the_rest(start: Callable[..., Api]) -> None:
    api = start(window_seconds=2.0, lines_per_second=5.0, validate_seconds=0.5)
    created = api.batch([chat_line(i) for i in range(20)])
    api.clock.at(1.9)
    assert api.get(created["id"])["status"] == "in_progress"
    api.clock.at(2.0)
    b = api.get(created["id"])
    assert b["status"] == "expired" and b["expired_at"] == created["expires_at"]
    assert b["request_counts"] == {"total": 20, "completed": 7, "failed": 13}  # 1.5 s at 5/s
    out, err = api.content(b["output_file_id"]), api.content(b["error_file_id"])
    assert [line["custom_id"] for line in out] == [f"r{i}" for i in range(7)]
    assert [line["custom_id"] for line in err] == [f"r{i}" for i in range(7, 20)]
    assert err[0]["response"] is None and err[0]["error"]["code"] == "batch_expired"
    stats = api.sim.stats()["batch"]
    assert stats["final"] == {"expired": 1} and stats["lines_expired"] == 13


def test_cancel(start: Callable[..., Api]) -> None:
    api = start()
    running = api.batch([chat_line(i) for i in range(30)], metadata={"k": "running"})["id"]
    waiting = api.batch([chat_line(i) for i in range(3)])["id"]
    finished = api.batch([chat_line(i) for i in range(2)])["id"]
    api.clock.at(0.5)
    w = api.http.post(f"/batches/{waiting}/cancel").json()
    assert w["status"] == "cancelling" and w["cancelling_at"] is not None
    api.clock.at(2.0)  # 10 lines of `running` done at +2 s
    c = api.http.post(f"/batches/{running}/cancel")
    assert c.status_code == 200 and c.json()["status"] == "cancelling"
    assert api.http.post(f"/batches/{running}/cancel").json()["status"] == "cancelling"  # idempotent
    api.clock.at(2.5)
    assert api.get(running)["status"] == "cancelling"
    api.clock.at(3.0)
    b = api.get(running)
    assert b["status"] == "cancelled" and b["cancelled_at"] == b["cancelling_at"] + 1
    assert b["request_counts"] == {"total": 30, "completed": 10, "failed": 20}
    assert len(api.content(b["output_file_id"])) == 10
    err = api.content(b["error_file_id"])
    assert len(err) == 20 and err[0]["error"]["code"] == "batch_cancelled" and err[0]["response"] is None
    w = api.get(waiting)
    assert w["status"] == "cancelled" and w["in_progress_at"] is None
    assert w["request_counts"]["total"] == 0 and w["output_file_id"] is None and w["error_file_id"] is None
    assert api.get(finished)["status"] == "completed"
    refused = api.http.post(f"/batches/{finished}/cancel")
    assert refused.status_code == 409 and "completed" in refused.json()["error"]["message"]
    assert api.http.post("/batches/batch_nope/cancel").status_code == 404
    stats = api.sim.stats()["batch"]
    assert stats["cancels"] == 2 and stats["final"] == {"cancelled": 2, "completed": 1}
    assert stats["lines_cancelled"] == 20


# ---- validation ---------------------------------------------------------------------------------


def test_line_validation_fails_the_batch_with_line_numbers(start: Callable[..., Api]) -> None:
    api = start()
    lines: list[Any] = [
        chat_line(0),
        b"{not json",
        b"",  # blank lines are skipped, but counted in line numbers
        {k: v for k, v in chat_line(3).items() if k != "custom_id"},
        chat_line(4, method="GET"),
        chat_line(5, url=EMBED),
        chat_line(6, model="gpt-4o"),
        chat_line(0),  # duplicate custom_id
        b"[1, 2]",
    ]
    created = api.batch(lines)
    api.clock.at(0.5)
    assert api.get(created["id"])["status"] == "validating"
    api.clock.at(1.0)
    b = api.get(created["id"])
    assert b["status"] == "failed" and b["failed_at"] == created["created_at"] + 1
    assert b["in_progress_at"] is None and b["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert b["errors"]["object"] == "list"
    got = [(e["line"], e["code"], e["param"]) for e in b["errors"]["data"]]
    assert got == [
        (2, "invalid_json_line", None),
        (4, "missing_required_parameter", "custom_id"),
        (5, "invalid_method", "method"),
        (6, "invalid_url", "url"),
        (7, "mismatched_model", "body.model"),
        (8, "duplicate_custom_id", "custom_id"),
        (9, "invalid_json_line", None),
    ]
    assert all(isinstance(e["message"], str) and e["message"] for e in b["errors"]["data"])
    assert "prefix-match" in b["errors"]["data"][3]["message"]
    assert api.sim.stats()["batch"]["final"] == {"failed": 1}


def test_file_level_limits(start: Callable[..., Api]) -> None:
    api = start(max_requests_per_file=3, max_embedding_inputs=4)
    empty = api.batch([])["id"]
    blank = api.create(api.upload(b"\n \n", "blank.jsonl").json()["id"]).json()["id"]
    many = api.batch([chat_line(i) for i in range(4)])["id"]
    fits = api.batch([chat_line(i) for i in range(3)])["id"]
    inputs = [{"custom_id": f"e{i}", "method": "POST", "url": EMBED,
               "body": {"model": "text-embedding-3-small", "input": ["a", "b", "c"]}} for i in range(2)]
    embeds = api.batch(inputs, EMBED)["id"]
    api.clock.at(1)
    codes = {bid: [e["code"] for e in api.get(bid)["errors"]["data"]] for bid in (empty, blank, many, embeds)}
    assert codes == {empty: ["empty_file"], blank: ["empty_file"], many: ["too_many_tasks"],
                     embeds: ["too_many_tasks"]}
    assert api.get(fits)["status"] == "in_progress"


def test_create_rejections(start: Callable[..., Api]) -> None:
    api = start()
    fid = api.file_id([chat_line(0)])
    notes = api.upload(b"x", "notes.txt", purpose="user_data").json()["id"]
    cases = {
        "endpoint": api.create(fid, endpoint="/v1/images"),
        "completion_window": api.http.post(
            "/batches", json={"input_file_id": fid, "endpoint": CHAT, "completion_window": "1h"}),
        "input_file_id": api.create("file-missing"),
        "purpose": api.create(notes),
        "metadata": api.create(fid, metadata={"k": 1}),
        "many keys": api.create(fid, metadata={str(i): "v" for i in range(17)}),
        "missing": api.http.post("/batches", json={"endpoint": CHAT, "completion_window": "24h"}),
        "not json": api.http.post("/batches", content=b"nope"),
    }
    assert {name: r.status_code for name, r in cases.items()} == dict.fromkeys(cases, 400)
    assert cases["endpoint"].json()["error"]["param"] == "endpoint"
    assert cases["missing"].json()["error"]["code"] == "missing_required_parameter"
    missing = api.http.get("/batches/batch_nope")
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "No batch found with id 'batch_nope'."
    assert api.http.get("/batches", params={"limit": 101}).status_code == 400
    assert api.http.get("/batches", params={"limit": "x"}).status_code == 400
    stats = api.sim.stats()["batch"]
    assert stats["creates_rejected"] == len(cases) and stats["batches_created"] == 0


def test_list_newest_first_with_pagination_and_metadata(start: Callable[..., Api]) -> None:
    api = start()
    ids = []
    for i in range(5):
        api.clock.at(i * 0.1)
        ids.append(api.batch([chat_line(i)], metadata={"run": "r1", "part": str(i)})["id"])
    newest = list(reversed(ids))
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": 2} | ({"after": after} if after else {})
        page = api.http.get("/batches", params=params).json()
        pages += 1
        assert page["object"] == "list"
        seen += page["data"]
        assert page["first_id"] == page["data"][0]["id"] and page["last_id"] == page["data"][-1]["id"]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert pages == 3 and [b["id"] for b in seen] == newest
    assert [b["metadata"] for b in seen] == [{"run": "r1", "part": str(i)} for i in (4, 3, 2, 1, 0)]
    everything = api.http.get("/batches").json()
    assert len(everything["data"]) == 5 and everything["has_more"] is False
    assert api.http.get("/batches", params={"after": newest[-1]}).json()["data"] == []


# ---- provider limits ----------------------------------------------------------------------------


def test_enqueued_token_limit_is_seen_when_polling(start: Callable[..., Api]) -> None:
    # each line: 3 + 4 + ceil(len("Say N.") / 4) = 9 prompt tokens
    api = start(enqueued_tokens=200, model_enqueued_tokens={"text-embedding-3-small": 5})
    first = api.batch([chat_line(i) for i in range(20)])["id"]  # 180 tokens: fits
    api.clock.at(0.2)
    second = api.batch([chat_line(i) for i in range(5)])  # 45 more: 225 > 200
    assert second["status"] == "validating"  # accepted at creation, as OpenAI does
    embed_line = {"custom_id": "e", "method": "POST", "url": EMBED,
                  "body": {"model": "text-embedding-3-small", "input": "a b c d e f g h i j k l m n o p q r s t u v"}}
    too_big = api.batch([embed_line], EMBED)["id"]  # 11 tokens > its model's own limit of 5
    api.clock.at(1.2)
    b = api.get(second["id"])
    assert b["status"] == "failed" and b["request_counts"]["total"] == 0
    [error] = b["errors"]["data"]
    assert error["code"] == "token_limit_exceeded" and error["line"] is None
    assert error["message"].startswith("Enqueued token limit reached for gpt-4o-mini in organization")
    assert "Limit: 200 enqueued tokens" in error["message"]
    assert api.get(first)["status"] == "in_progress"
    assert api.get(too_big)["errors"]["data"][0]["code"] == "token_limit_exceeded"
    api.clock.at(4.0)  # first: lines done at +3 s, completed at +4 s; no longer enqueued
    assert api.get(first)["status"] == "completed"
    third = api.batch([chat_line(i) for i in range(5)])["id"]
    api.clock.at(5.0)
    assert api.get(third)["status"] == "in_progress"


def test_validation_outcome_does_not_depend_on_when_clients_poll() -> None:
    """Two apps, same requests: one polled often, one only at the end, reach the same states."""

    def run(poll: bool) -> list[str]:
        clock = FakeClock()
        cfg = BatchConfig(validate_seconds=1, lines_per_second=10, finalize_seconds=1, enqueued_tokens=200)
        app = SimulatorApp(SimulatorConfig(clock=clock, batch=cfg))
        upload = jsonl([chat_line(i) for i in range(20)])
        body = (b"--B\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--B\r\nContent-Disposition"
                b": form-data; name=\"file\"; filename=\"a.jsonl\"\r\n\r\n" + upload + b"\r\n--B--\r\n")
        headers = [(b"content-type", b"multipart/form-data; boundary=B")]
        fid = orjson.loads(app.handle(b"POST", b"/v1/files", headers, body).body)["id"]
        ids = []
        for step in range(8):  # a new 180-token batch every 0.7 s: only some fit beside the open ones
            clock.at(step * 0.7)
            create = orjson.dumps({"input_file_id": fid, "endpoint": CHAT, "completion_window": "24h"})
            ids.append(orjson.loads(app.handle(b"POST", b"/v1/batches", [], create).body)["id"])
            if poll:
                for bid in ids:
                    app.handle(b"GET", f"/v1/batches/{bid}".encode(), [], b"")
        clock.at(60)
        return [orjson.loads(app.handle(b"GET", f"/v1/batches/{bid}".encode(), [], b"").body)["status"]
                for bid in ids]

    often, once = run(True), run(False)
    assert often == once
    assert "completed" in often and "failed" in often


def test_create_and_upload_rate_limits_answer_429_with_retry_after(start: Callable[..., Api]) -> None:
    api = start(create_rpm=60, upload_rpm=120)  # 1 create/s, 2 uploads/s
    fid = api.file_id([chat_line(0)])
    assert api.upload(jsonl([chat_line(0)])).status_code == 200
    limited_upload = api.upload(jsonl([chat_line(0)]))
    assert limited_upload.status_code == 429
    assert api.create(fid).status_code == 200
    r = api.create(fid)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1" and r.headers["retry-after-ms"] == "1000"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert "batch creation" in r.json()["error"]["message"]
    api.clock.at(1.0)
    assert api.create(fid).status_code == 200
    stats = api.sim.stats()["batch"]
    assert stats["rate_limited_creates"] == 1 and stats["rate_limited_uploads"] == 1
    assert stats["batches_created"] == 2 and stats["batches_by_input_file"] == [[fid, 2]]
    assert stats["batches_by_filename"] == [["in.jsonl", 2]]


def test_api_key_is_required_when_configured(start: Callable[..., Api]) -> None:
    api = start(config={"api_key": "sk-batch-test-key"})
    r = api.http.get("/batches")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    wrong = api.http.get("/files", headers={"authorization": "Bearer sk-wrong-key-123"})
    assert wrong.status_code == 401 and "sk-wrong" not in wrong.text
    ok = api.http.get("/files", headers={"authorization": "Bearer sk-batch-test-key"})
    assert ok.status_code == 200 and ok.json()["data"] == []


def test_stats_reset_keeps_the_batches(start: Callable[..., Api]) -> None:
    api = start()
    bid = api.batch([chat_line(0)])["id"]
    assert api.sim.stats()["batch"]["batches_created"] == 1
    api.sim.reset_stats()
    assert api.sim.stats()["batch"]["batches_created"] == 0
    api.clock.at(5)
    assert api.get(bid)["status"] == "completed"
    assert api.sim.stats()["batch"]["final"] == {"completed": 1}


# ---- config -------------------------------------------------------------------------------------


def test_batch_config_validation_and_flags() -> None:
    for bad in ({"window_seconds": 0}, {"lines_per_second": -1}, {"validate_seconds": -1}, {"failure_rate": 2},
                {"max_requests_per_file": 0}, {"enqueued_tokens": 0}, {"create_rpm": 0},
                {"model_enqueued_tokens": {"m": 0}}, {"create_faults": ("nope",)}):
        with pytest.raises(ValueError):
            BatchConfig(**bad)
    assert batch_args(BatchConfig()) == []
    cfg = BatchConfig(window_seconds=5.0, fail_all=True, model_enqueued_tokens={"gpt-4o": 90_000}, upload_rpm=10)
    assert batch_args(cfg) == ["--batch-window-seconds", "5.0", "--batch-fail-all",
                               "--batch-model-enqueued-tokens", "gpt-4o=90000", "--batch-upload-rpm", "10"]
    assert cfg.enqueued_limit("gpt-4o") == 90_000 and cfg.enqueued_limit("other") is None
    assert parse_enqueued_limits(["a=1", "org/m=2"]) == {"a": 1, "org/m": 2}
    with pytest.raises(ValueError):
        parse_enqueued_limits(["a"])


def test_results_do_not_depend_on_when_clients_poll(start: Callable[..., Api]) -> None:
    """Lines are answered as polls come (spreading the work); the files are the same either way."""

    def results(poll_every: float | None) -> tuple[list[Any], dict[str, Any]]:
        api = start(failure_rate=0.2, lines_per_second=7.0)
        bid = api.batch([chat_line(i) for i in range(30)], metadata={"m": "1"})["id"]
        if poll_every:
            t = 0.0
            while t < 6:
                t += poll_every
                api.clock.at(t)
                b = api.get(bid)
                if b["status"] == "in_progress":
                    assert b["usage"]["input_tokens"] > 0 or b["request_counts"]["completed"] == 0
        api.clock.at(10)
        b = api.get(bid)
        rows = [(line["custom_id"], line["response"]["status_code"], line["response"]["body"].get("usage"),
                 line["response"]["body"].get("choices")) for fid in (b["output_file_id"], b["error_file_id"])
                for line in api.content(fid)]
        return rows, b["usage"]

    assert results(0.3) == results(None)


def test_upload_and_create_faults_including_lost_replies(start: Callable[..., Api]) -> None:
    api = start(upload_faults=("500", "lost", "drop"), create_faults=("lost", "500", "ok"))
    data = jsonl([chat_line(0)])
    assert api.upload(data, "a.jsonl").status_code == 500  # not stored
    with pytest.raises(httpx.TransportError):
        api.upload(data, "a.jsonl")  # stored, the reply lost
    with pytest.raises(httpx.TransportError):
        api.upload(data, "a.jsonl")  # not stored
    files = api.http.get("/files").json()["data"]
    assert [f["filename"] for f in files] == ["a.jsonl"]
    fid = files[0]["id"]
    with pytest.raises(httpx.TransportError):
        api.create(fid, metadata={"run": "x"})  # created, the reply lost
    assert api.create(fid).status_code == 500
    [lost] = api.http.get("/batches").json()["data"]
    assert lost["metadata"] == {"run": "x"} and lost["input_file_id"] == fid  # found again by its metadata
    assert api.create(fid).status_code == 200
    stats = api.sim.stats()["batch"]
    assert stats["files_uploaded"] == 1 and stats["upload_faults"] == 2
    assert stats["batches_created"] == 2 and stats["create_faults"] == 1
    assert stats["uploads_by_filename"] == [["a.jsonl", 1]] and stats["batches_by_input_file"] == [[fid, 2]]
