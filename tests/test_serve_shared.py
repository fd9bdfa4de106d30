"""Concurrent askers of one dashboard share one computation (worker/http/shared.py)."""

from __future__ import annotations

import anyio
import pytest

from worker.http.shared import SharedAnswers


async def test_concurrent_askers_of_one_key_share_one_computation() -> None:
    shared = SharedAnswers(ttl_s=60)
    started = anyio.Event()
    release = anyio.Event()
    answers: list[int] = []

    async def compute() -> int:
        started.set()
        await release.wait()  # held until every asker is waiting
        return 42

    async def ask() -> None:
        answers.append(await shared.get(("scope", 7), compute))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(ask)
        await started.wait()
        release.set()
    assert answers == [42] * 20
    assert shared.computed == 1


async def test_another_key_or_an_expired_answer_is_computed_again() -> None:
    shared = SharedAnswers(ttl_s=0.05)
    calls = []

    async def compute() -> int:
        calls.append(1)
        return len(calls)

    assert await shared.get(("scope", 7), compute) == 1
    assert await shared.get(("scope", 7), compute) == 1  # reused
    assert await shared.get(("scope", 8), compute) == 2  # a commit since: a new key
    await anyio.sleep(0.06)  # the scenario: the answer's time is up
    assert await shared.get(("scope", 8), compute) == 3


async def test_a_failed_computation_is_not_kept_and_the_next_asker_computes() -> None:
    shared = SharedAnswers(ttl_s=60)

    async def fail() -> int:
        raise OSError("database is locked")

    async def succeed() -> int:
        return 1

    with pytest.raises(OSError, match="locked"):
        await shared.get("k", fail)
    assert await shared.get("k", succeed) == 1


async def test_an_answer_serves_only_askers_whose_last_commit_it_holds() -> None:
    """A page that heard of commit 6 never gets the answer made when 5 was the last."""
    shared = SharedAnswers(ttl_s=60)
    made = []

    async def compute() -> int:
        made.append(1)
        return len(made)

    assert await shared.get("page", compute, seen=5, at_least=5) == 1
    assert await shared.get("page", compute, seen=5, at_least=0) == 1  # an API poller
    assert await shared.get("page", compute, seen=6, at_least=6) == 2  # heard of 6
    assert await shared.get("page", compute, seen=7, at_least=6) == 2  # 2 holds 6


async def test_while_nothing_commits_an_answer_serves_everyone_until_the_quarter_hour(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past its second, an answer is reused only while the last commit heard of is
    still the one it began with, within ``idle_s`` and its quarter hour."""
    import worker.http.shared as shared_module

    shared = SharedAnswers(ttl_s=0.0, idle_s=60)
    made = []

    async def compute() -> int:
        made.append(1)
        return len(made)

    assert await shared.get("page", compute, seen=5) == 1
    assert await shared.get("page", compute, seen=5, at_least=5) == 1  # nothing since
    assert await shared.get("page", compute, seen=6) == 2  # a commit since
    assert await shared.get("page", compute, seen=6, at_least=7) == 3  # heard of more
    assert await shared.get("page", compute, seen=6) == 3
    quarter = shared_module._quarter_hour()
    monkeypatch.setattr(shared_module, "_quarter_hour", lambda: quarter + 1)
    assert await shared.get("page", compute, seen=6) == 4  # the clock moved on
    assert await shared.get("page", compute, seen=6) == 4
    shared.idle_s = 0.0
    assert await shared.get("page", compute, seen=6) == 5  # idle_s is up
    assert await SharedAnswers(ttl_s=0.0).get("page", compute, seen=6) == 6  # idle_s 0: off
