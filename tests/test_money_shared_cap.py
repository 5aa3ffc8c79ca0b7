"""A spending cap shared by a fleet (`--max-cost` with `--shared`): processes together never pass it.

Units drive `Spending` over `SharedLedger`s on one store with a fake clock (no sleeping); a real redis-server
holds the cap under concurrency and through an outage; and three real CLI processes, each on a shard of one file,
with faults, against the real simulator, stop at the cap together (exit 5) and resume with a higher one.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from cli_process import PLANTED_KEY, chat_jobs, cli, finish, parse_output, run_args, start, write_jsonl
from redis_server import free_port
from test_budget import FakeClock
from test_money_cap import TABLE, ScriptedSender, _job, _success

from batchchat.errors import ExitCode
from batchchat.http.outcomes import Retryable
from batchchat.money.cost import tokens_cost, usage_tokens
from batchchat.money.guard import FLEET_PATIENCE, Spending
from batchchat.money.ledger import SharedLedger, cap_key, default_cap_name
from batchchat.money.prices import PriceTable
from batchchat.pacing.redis_store import CAP_RECOVERY, RedisStore
from batchchat.pacing.shared import SharedStore, SharedStoreLost
from batchchat.pacing.store import LocalStore
from batchchat.simulator import Simulator

Fails = list[tuple[ExitCode, str]]


def _process(store: Any, cap: float, clock: FakeClock, fails: Fails, key: str = "job") -> Spending:
    """One process of the fleet: its own `Spending`, drawing on the cap `key` in the shared `store`."""
    return Spending(TABLE, SharedLedger(store, key, "job.jsonl", cap), lambda code, msg: fails.append((code, msg)),
                    clock=clock, sleep=clock.sleep)


def test_processes_wait_for_each_others_requests_then_stop_together_at_the_cap() -> None:
    clock = FakeClock()
    store = LocalStore(clock)
    worst = Spending(TABLE).worst_case(_job(100), 5)
    assert worst is not None
    cap = 1.5 * worst  # one request in flight at a time, for the whole fleet
    fails_a: Fails = []
    fails_b: Fails = []
    a, b = _process(store, cap, clock, fails_a), _process(store, cap, clock, fails_b)

    a_first, b_first = _job(100), _job(100)

    async def main() -> None:
        assert await a.reserve(a_first, 5)
        b_reserved = anyio.Event()

        async def b_waits() -> None:
            assert await b.reserve(b_first, 5)  # nothing of its own in flight: it watches the fleet's cap
            b_reserved.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(b_waits)
            for _ in range(5):
                await clock.sleep(0.01)
            assert not b_reserved.is_set()  # A's request holds the room
            await a.send(a_first, ScriptedSender([_success(3, 2)]), b"")  # ...and frees most of it
        assert b_reserved.is_set()
        spent, reserved = await store.cap_usage("job")
        assert spent + reserved <= cap
        # A's next request does not fit beside B's; B's is dropped (may have been billed: spent in full)
        a_next = anyio.Event()

        async def a_waits() -> None:
            assert not await a.reserve(_job(100), 5)
            a_next.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(a_waits)
            await clock.sleep(0.01)
            assert not a_next.is_set()
            await b.send(b_first, ScriptedSender([Retryable("connection", "reset")]), b"")
        spent, reserved = await store.cap_usage("job")
        assert reserved == 0 and spent <= cap

    anyio.run(main)
    assert [code for code, _ in fails_a] == [ExitCode.SPENDING_CAP] and not fails_b
    assert "spent by the fleet" in fails_a[0][1] and "by this process" in fails_a[0][1]
    assert a.to_dict()["cap"]["shared"]["name"] == "job.jsonl"


def test_a_crashed_processs_reservations_count_as_spent_after_the_fleets_patience() -> None:
    clock = FakeClock()
    store = LocalStore(clock)
    worst = Spending(TABLE).worst_case(_job(100), 5)
    assert worst is not None
    fails: Fails = []
    crashed, alive = _process(store, 1.5 * worst, clock, []), _process(store, 1.5 * worst, clock, fails)

    async def main() -> float:
        assert await crashed.reserve(_job(100), 5)  # ...and never settles
        started = clock()
        assert not await alive.reserve(_job(100), 5)
        return clock() - started

    waited = anyio.run(main)
    assert FLEET_PATIENCE <= waited < FLEET_PATIENCE + 1.0
    assert [code for code, _ in fails] == [ExitCode.SPENDING_CAP]


def test_every_process_keeps_its_own_figures_and_the_fleet_its_total() -> None:
    clock = FakeClock()
    store = LocalStore(clock)
    fleet = [_process(store, 1.0, clock, []) for _ in range(3)]

    async def main() -> None:
        for n, spending in enumerate(fleet):
            for _ in range(n + 1):
                job = _job(10)
                assert await spending.reserve(job, 5)
                await spending.send(job, ScriptedSender([_success(100, 10)]), b"")
        for spending in fleet:
            await spending.aclose()

    anyio.run(main)
    price = TABLE.price_for("gpt-4o-mini")
    assert price is not None
    one = tokens_cost(price, usage_tokens({"prompt_tokens": 100, "completion_tokens": 10})).total
    assert [s.spent for s in fleet] == [pytest.approx(one * k) for k in (1, 2, 3)]
    assert all(s.to_dict()["cap"]["shared"]["fleet_spent_usd"] == pytest.approx(6 * one) for s in fleet)


def test_the_default_cap_name_is_the_input_file_wherever_it_lies(tmp_path: Path) -> None:
    (tmp_path / "host1").mkdir()
    (tmp_path / "host2").mkdir()
    one = write_jsonl(tmp_path / "host1" / "job.jsonl", chat_jobs(5))
    two = Path(shutil.copy(one, tmp_path / "host2" / "job.jsonl"))
    other = write_jsonl(tmp_path / "other.jsonl", chat_jobs(6))
    assert default_cap_name(one, str(one)) == default_cap_name(two, "job.jsonl")  # a copy on another host
    assert default_cap_name(one, str(one)) != default_cap_name(other, str(other))
    assert default_cap_name(one, "<stdin>").startswith("<stdin>:")
    # the store's name for it: a hash of key, endpoint and name, never any of them
    key = cap_key(PLANTED_KEY, "http://127.0.0.1:1/v1", "job.jsonl")
    assert len(key) == 64 and PLANTED_KEY not in key
    assert key != cap_key(PLANTED_KEY, "http://127.0.0.1:2/v1", "job.jsonl")
    assert key != cap_key("sk-other", "http://127.0.0.1:1/v1", "job.jsonl")


async def test_a_cap_in_redis_is_never_passed_by_concurrent_processes(redis_url: str) -> None:
    stores = [SharedStore(RedisStore(redis_url)) for _ in range(3)]
    key = cap_key(PLANTED_KEY, "http://127.0.0.1:1/v1", "a job")
    ledgers = [SharedLedger(store, key, "a job", 1.0) for store in stores]
    try:
        got = await asyncio.gather(*(ledgers[i % 3].try_reserve(0.003) for i in range(600)))
        assert sum(got) == 333  # $0.999 of $1.00: never one reservation more, whoever asked
        assert sum(ledger.reserved for ledger in ledgers) == pytest.approx(333 * 0.003)
        for ledger in ledgers:  # each settles what it holds at a third of it
            held = round(ledger.reserved / 0.003)
            for _ in range(held):
                await ledger.settle(0.003, 0.001)
        spent, reserved = await ledgers[0].usage()
        assert spent == pytest.approx(0.333) and reserved == pytest.approx(0.0, abs=1e-9)
        assert sum(ledger.spent for ledger in ledgers) == pytest.approx(spent)
    finally:
        for store in stores:
            await store.close()
    client = redis.Redis.from_url(redis_url)
    try:
        names = [k.decode() for k in client.scan_iter(match="batchchat:*:cap")]
        assert names == [f"batchchat:{{{key}}}:cap"]  # under the hash: no key, no name
    finally:
        client.close()


async def test_a_fleets_cap_never_falls_back_to_local_budgets() -> None:
    clock = FakeClock()
    dead = f"redis://127.0.0.1:{free_port()}/0"
    store = SharedStore(RedisStore(dead), timeout=2.0, fallback="local", clock=clock, sleep=clock.sleep)
    ledger = SharedLedger(store, "cap", "job", 1.0)
    try:
        with pytest.raises(SharedStoreLost, match=r"spending cap .* cannot be kept without it"):
            await ledger.try_reserve(0.01)
        assert clock.now >= 1_000_020.0 + 2.0  # it waited out --shared-timeout, then would not go local
        await ledger.settle(0.0, 0.02)  # a late answer's cost is kept for the store, not lost
        assert ledger.spent == pytest.approx(0.02)
    finally:
        await store.close()


# -- the fleet through the CLI ------------------------------------------------------------------------------

def _billed(sim: Simulator) -> float:
    """What the simulator billed (its 200 answers' usage) at the shipped prices."""
    table = PriceTable.load(None)
    total = 0.0
    for model, row in sim.stats()["models"].items():
        price = table.price_for(model)
        assert price is not None
        usage = {"prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"]}
        total += tokens_cost(price, usage_tokens(usage)).total
    return total


def _fleet(sim: Simulator, src: Path, tmp_path: Path, redis_url: str, cap: str) -> list[tuple[int, str, str]]:
    procs = [start(*run_args(sim.base_url, src, tmp_path / f"part{k}.jsonl", "--shard", f"{k}/3", "--rpm", "6000",
                             "--concurrency", "8", "--max-cost", cap, "--shared", redis_url), cwd=tmp_path)
             for k in range(3)]
    return [finish(p, timeout=120) for p in procs]


def test_three_processes_with_faults_stop_together_at_a_shared_cap_and_resume_above_it(
        tmp_path: Path, simulator: Callable[..., Simulator], redis_url: str) -> None:
    sim = simulator(latency_ms=30, fault_rates={"500": 0.05, "drop": 0.02}, seed=7)
    src = write_jsonl(tmp_path / "job.jsonl", chat_jobs(240, max_tokens=16))
    cap = 0.0006  # about a third of what the job costs
    first = _fleet(sim, src, tmp_path, redis_url, str(cap))
    assert [code for code, _, _ in first] == [5, 5, 5], [err[-600:] for _, _, err in first]
    billed = _billed(sim)
    assert 0.8 * cap <= billed <= cap  # the fleet together: never past the cap, and most of it used
    assert all("spent by the fleet" in err for _, _, err in first)
    written = [line for k in range(3) for line in parse_output(tmp_path / f"part{k}.jsonl")]
    assert sum(line["cost_usd"] or 0.0 for line in written) <= cap
    assert 0 < len(written) < 240
    # `status --shared` shows the fleet's cap, named as the summary names it
    name = re.search(r"shared by the fleet \((job\.jsonl:[^)]+)\)", first[0][1])
    assert name is not None, first[0][1]
    status = cli("status", "--shared", redis_url, "--cap-name", name.group(1), "--base-url", sim.base_url)
    assert status.returncode == 0, status.stderr
    assert re.search(rf"spending cap {re.escape(name.group(1))}: \$[0-9.]+ spent of \$0\.0006\d* \((8\d|9\d|100)\.\d% "
                     r"used or held\), \$0\.00 held", status.stdout), status.stdout
    # a rerun with a higher cap resumes each shard where it stopped, and the job completes once
    second = _fleet(sim, src, tmp_path, redis_url, "1.0")
    assert [code for code, _, _ in second] == [0, 0, 0], [err[-600:] for _, _, err in second]
    assert all("resuming" in err for _, _, err in second)
    merged = cli("merge", tmp_path / "all.jsonl", *(tmp_path / f"part{k}.jsonl" for k in range(3)))
    assert merged.returncode == 0, merged.stderr
    ids = [line["custom_id"] for line in parse_output(tmp_path / "all.jsonl")]
    assert sorted(ids) == sorted(f"r{i}" for i in range(240))
    assert PLANTED_KEY not in "".join(out + err for _, out, err in first + second)


def test_cap_name_needs_a_shared_cap(tmp_path: Path, sim: Simulator) -> None:
    src = write_jsonl(tmp_path / "job.jsonl", chat_jobs(2))
    done = cli(*run_args(sim.base_url, src, tmp_path / "out.jsonl", "--cap-name", "nightly"))
    assert done.returncode == 2 and "--cap-name" in done.stderr and "Traceback" not in done.stderr
    assert sim.stats()["requests"] == 0


def test_the_float_residue_of_settled_reservations_is_not_taken_for_requests_in_flight() -> None:
    clock = FakeClock()
    store = LocalStore(clock)
    fails: Fails = []
    spending = _process(store, 0.0001, clock, fails)

    async def main() -> float:
        assert await store.reserve_spend("job", 0.0001, 0.0001 - 1e-13)  # spent, in effect: nothing left
        await store.settle_spend("job", 0.0001 - 1e-13, 0.0001 - 1e-13)
        assert await store.reserve_spend("job", 0.0001, 1e-15)  # what sums of floats leave behind
        started = clock()
        assert not await spending.reserve(_job(30), 9)
        return clock() - started

    assert anyio.run(main) < 1.0  # the cap is reached at once, not after FLEET_PATIENCE watching a residue
    assert [code for code, _ in fails] == [ExitCode.SPENDING_CAP]


async def test_settled_reservations_leave_nothing_reserved_in_redis(redis_url: str) -> None:
    store = RedisStore(redis_url)
    amounts = [0.1 + 0.2 * (k % 7) / 3.0 + 1e-7 * k for k in range(200)]
    try:
        for amount in amounts:
            assert await store.reserve_spend("residue", 1e6, amount)
        for amount in reversed(amounts):
            await store.settle_spend("residue", amount, amount / 3.0)
        spent, reserved = await store.cap_usage("residue")
        assert reserved == 0.0 and spent == pytest.approx(sum(amounts) / 3.0)
    finally:
        await store.close()


def test_a_capped_fleet_stops_when_redis_is_lost_even_with_the_local_fallback(tmp_path: Path, sim: Simulator) -> None:
    src = write_jsonl(tmp_path / "job.jsonl", chat_jobs(5))
    dead = f"redis://127.0.0.1:{free_port()}/0"
    done = cli(*run_args(sim.base_url, src, tmp_path / "out.jsonl", "--rpm", "600", "--shared", dead,
                         "--shared-timeout", "0.2", "--shared-fallback", "local", "--max-cost", "1"), timeout=60)
    assert done.returncode == 8, done.stderr
    assert "spending cap" in done.stderr and "cannot be kept without it" in done.stderr
    assert sim.stats()["requests"] == 0 and "Traceback" not in done.stderr


async def test_a_redis_restarted_empty_gets_every_live_processs_spending_back_before_a_reservation(
        redis_url: str) -> None:
    stores = [SharedStore(RedisStore(redis_url)) for _ in range(2)]
    a, b = (SharedLedger(store, "restart", "job", 1.0) for store in stores)
    client = redis.Redis.from_url(redis_url)
    try:
        for ledger, held, spent in ((a, 0.6, 0.5), (b, 0.35, 0.3)):
            assert await ledger.try_reserve(held)
            await ledger.settle(held, spent)
        assert await b.try_reserve(0.1)  # held for a request in flight
        async with anyio.create_task_group() as tg:
            tg.start_soon(stores[1].keep_listed, {"host": "b"})  # B, busy with its request: its heartbeat loop
            client.flushall()  # Redis restarted with nothing persisted: the fleet's $0.90 is gone from it
            started = anyio.current_time()
            # A puts back its $0.50 and waits while every live process puts back its own (B: $0.30 + $0.10)
            assert not await a.try_reserve(0.2)  # 0.9 + 0.2 > 1.0: refused, as before the loss
            assert anyio.current_time() - started >= CAP_RECOVERY - 0.1
            tg.cancel_scope.cancel()
        assert await a.usage() == (pytest.approx(0.8), pytest.approx(0.1))
        assert not await b.try_reserve(0.15)
        assert await a.try_reserve(0.1)  # exactly the cap
        assert not await b.try_reserve(0.001)
    finally:
        client.close()
        for store in stores:
            await store.close()


class SlowNetwork(RedisStore):
    """A real Redis a little far away: every settle takes 5 ms to get there (a check may run meanwhile)."""

    async def settle_spend(self, cap_key: str, reserved: float, actual: float, holder: str = "-") -> None:
        await anyio.sleep(0.005)
        await super().settle_spend(cap_key, reserved, actual, holder)


async def test_many_uneven_settles_are_never_taken_for_a_lost_cap(redis_url: str) -> None:
    ledgers = [SharedLedger(SharedStore(SlowNetwork(redis_url)), "drift", "job", 1e6) for _ in range(2)]

    async def worker(ledger: SharedLedger, seed: int) -> None:
        for k in range(100):
            held = 1e-5 * (1 + (k * seed) % 17) / 3.0
            assert await ledger.try_reserve(held)
            actual = held * ((k + seed) % 7) / 7.0 if k % 50 else held * 1.5  # now and then an overrun
            await ledger.settle(held, actual)

    async def checker(ledger: SharedLedger, done: anyio.Event) -> None:  # as keep_listed does, but all the time
        while not done.is_set():
            await ledger.store.restore_spend(ledger.key, ledger.holder, (ledger.book.spent, ledger.book.reserved))

    try:
        done = anyio.Event()
        async with anyio.create_task_group() as tg:
            for ledger in ledgers:
                tg.start_soon(checker, ledger, done)
            async with anyio.create_task_group() as workers:
                for n, ledger in enumerate(ledgers * 2):
                    workers.start_soon(worker, ledger, n + 1)
            done.set()
        client = redis.Redis.from_url(redis_url)
        try:
            fields = client.hgetall(RedisStore.cap_key("drift"))
        finally:
            client.close()
        assert b"lost_at" not in fields  # the mirrors never ran ahead of the store: no false alarm, no pause
        spent, reserved = await ledgers[0].usage()
        assert spent == pytest.approx(sum(ledger.spent for ledger in ledgers), rel=1e-9)
        assert reserved == pytest.approx(0.0, abs=1e-12)
    finally:
        for ledger in ledgers:
            await ledger.store.close()
