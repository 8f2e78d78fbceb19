"""BoundedTasks: at most `limit` at once, the rest refused and counted, slots freed on exit."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from mcp_gateway.spawn import BoundedTasks


async def test_at_most_limit_run_and_the_rest_are_refused_until_one_ends() -> None:
    release = trio.Event()
    started: list[int] = []

    async def work(n: int) -> None:
        started.append(n)
        await release.wait()

    async with trio.open_nursery() as nursery:
        tasks = BoundedTasks(nursery, limit=3)
        assert [tasks.start_soon(work, n) for n in range(5)] == [True, True, True, False, False]
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(started) == [0, 1, 2] and tasks.running == 3 and tasks.refused == 2
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert tasks.running == 0
        assert tasks.start_soon(work, 5)  # a slot is free again (release stays set: it ends)
    assert sorted(started) == [0, 1, 2, 5]  # trio starts tasks in no promised order


async def test_a_failing_task_frees_its_slot_and_fails_the_owner() -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="boom")):
        async with trio.open_nursery() as nursery:
            tasks = BoundedTasks(nursery, limit=1)
            tasks.start_soon(fail)
    assert tasks.running == 0


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BoundedTasks(None, 0)  # type: ignore[arg-type]
