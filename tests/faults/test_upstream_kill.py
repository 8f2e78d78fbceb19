"""`kill -9` one upstream (a real process) under load: calls to the other upstreams never fail;
the dead one's calls get a precise JSON-RPC error at once (never a hang, never Envoy's 503); once
it is restarted on the same port its calls succeed again within 5 s, with no client doing
anything (the router opens a new backend session and replays, on the fast path too)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from tests.faults.harness import fault_stack, figure, load_on, prefix_of, wait_for_calls
from tests.support.servers import sample_process

pytestmark = pytest.mark.integration

RECOVERY_BOUND_SECONDS = 5.0


async def test_kill_9_one_upstream_under_load_the_others_never_fail(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with fault_stack(["alpha", "beta", "gamma"], tmp_path) as stack, AsyncExitStack() as later:
            victim = stack.upstreams["alpha"]
            async with load_on(stack.url, {name: prefix_of(name) for name in stack.upstreams}) as load:
                for server in ("alpha", "beta", "gamma"):
                    await wait_for_calls(load, server, 10)
                killed_at = trio.current_time()
                await victim.kill()  # SIGKILL: no goodbye, its sessions and sockets just vanish
                await wait_for_calls(load, "alpha", 5, since=killed_at, ok=False)
                spawned_at = trio.current_time()
                await later.enter_async_context(sample_process("echo", port=victim.port))
                restarted_at = trio.current_time()  # listening again (it printed its ready line)
                await wait_for_calls(load, "alpha", 1, since=restarted_at)
                recovered_at = min(o.ended for o in load.of("alpha", restarted_at) if o.ok)
                await wait_for_calls(load, "alpha", 10, since=recovered_at)
                load.stop.set()
            others = load.of("beta") + load.of("gamma")
            assert others and not load.failures("beta", "gamma"), load.failures("beta", "gamma")[:5]
            # While it was dead: each call to it answered at once with the router's JSON-RPC
            # error and its id, HTTP 200 (Envoy's own 503 never reaches a client).
            dead = [o for o in load.of("alpha", killed_at) if not o.ok and o.ended <= restarted_at]
            late = [o for o in load.of("alpha", restarted_at) if not o.ok and o.started < recovered_at]
            assert dead and all(o.status == 200 and o.code == -32603 and o.id_ok for o in dead + late), (dead + late)[:5]
            # Once one call succeeded after the restart, every later one did.
            after = [o for o in load.of("alpha") if o.started >= recovered_at]
            assert after and all(o.ok for o in after), [o for o in after if not o.ok][:5]
            recovery = recovered_at - restarted_at
            assert recovery < RECOVERY_BOUND_SECONDS
            slowest_refusal = max(o.ended - o.started for o in dead)
            figure("kill-9", (
                f"{len(others)} calls to the two other upstreams during the run, 0 failed; "
                f"{len(dead)} calls to the killed one answered -32603 with their id "
                f"(slowest {slowest_refusal * 1000:.0f} ms); its calls succeeded again "
                f"{recovery:.2f} s after it listened again (bound {RECOVERY_BOUND_SECONDS:.0f} s; the "
                f"process itself took {restarted_at - spawned_at:.2f} s to start)"))
