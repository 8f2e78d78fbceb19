import trio
import trio.testing

from mcp_gateway.broker.fanout import MIN_LOG_EVENTS, Fanout, ReplayLimits, Resume


async def test_every_stream_gets_every_message_and_one_too_far_behind_skips_only_its_own() -> None:
    fanout = Fanout(ReplayLimits(events=MIN_LOG_EVENTS))
    with fanout.subscribe("slow") as slow, fanout.subscribe("fast") as fast:
        for n in range(MIN_LOG_EVENTS + 2):
            assert fanout.publish(b"m%d" % n) == 2
            assert await fast.receive() == b"m%d" % n
        # The slow stream read nothing: the two oldest left its session's log.
        assert [m for _, m in slow.pending()] == [b"m%d" % n for n in range(2, MIN_LOG_EVENTS + 2)]
        assert fanout.dropped == 2
        assert fanout.delivered == 2 * (MIN_LOG_EVENTS + 2)
    assert fanout.stream_count == 0


async def test_publishing_to_one_session_reaches_only_its_streams() -> None:
    fanout = Fanout()
    with fanout.subscribe("a") as a, fanout.subscribe("b") as b:
        assert fanout.publish(b"for a", session_id="a") == 1
        assert a.pending() == [(1, b"for a")]
        assert b.pending() == []


async def test_closing_a_session_ends_its_streams_after_what_was_queued() -> None:
    fanout = Fanout()
    with fanout.subscribe("gone") as gone, fanout.subscribe("kept") as kept:
        fanout.publish(b"last words", session_id="gone")
        fanout.close_session("gone")
        assert [message async for message in gone] == [b"last words"]
        assert fanout.publish(b"x") == 1
        assert await kept.receive() == b"x"


async def test_a_stream_that_resumes_gets_exactly_what_it_missed_then_live_ones() -> None:
    fanout = Fanout()
    with fanout.subscribe("s") as first:
        fanout.publish(b"one")
        assert first.pending() == [(1, b"one")]
        seen = first.event_id.decode()
    fanout.publish(b"two")  # nobody listens: the log keeps it
    fanout.publish(b"three", session_id="s")
    with fanout.subscribe("s", seen) as again:
        assert again.resume is Resume.RESUMED
        assert again.backlog == 2
        fanout.publish(b"four")
        assert await again.receive_batch() == (2, [b"two", b"three", b"four"])
        assert again.event_id.decode().endswith("-4")
        assert again.event_id.split(b"-")[0] == first.event_id.split(b"-")[0]  # the same stream


async def test_a_resume_older_than_the_log_gets_what_is_kept_and_says_what_was_lost() -> None:
    fanout = Fanout(ReplayLimits(events=MIN_LOG_EVENTS))
    with fanout.subscribe("s") as first:
        seen = first.event_id.decode()  # before any message: "<epoch>-0"
    for n in range(MIN_LOG_EVENTS + 3):
        fanout.publish(b"m%d" % n)
    with fanout.subscribe("s", seen) as again:
        assert again.resume is Resume.GAP
        assert again.skipped == 3
        assert [number for number, _ in again.pending()] == list(range(4, MIN_LOG_EVENTS + 4))


async def test_the_bytes_bound_drops_the_oldest_but_keeps_the_newest_however_large() -> None:
    fanout = Fanout(ReplayLimits(events=100, bytes=10))
    with fanout.subscribe("s") as stream:
        seen = stream.event_id.decode()
    for message in (b"aaaa", b"bbbb", b"cccc"):
        fanout.publish(message)
    with fanout.subscribe("s", seen) as again:
        assert again.resume is Resume.GAP and again.skipped == 1
        assert again.pending() == [(2, b"bbbb"), (3, b"cccc")]
    fanout.publish(b"x" * 50)
    with fanout.subscribe("s", seen) as again:
        assert again.pending() == [(4, b"x" * 50)]


async def test_foreign_malformed_and_future_ids_give_a_fresh_stream_of_ones_own_session() -> None:
    fanout = Fanout()
    with fanout.subscribe("mine") as mine, fanout.subscribe("theirs") as theirs:
        fanout.publish(b"theirs only", session_id="theirs")
        fanout.publish(b"mine only", session_id="mine")
        assert theirs.pending() and mine.pending()
        their_id, mine_id = theirs.event_id.decode(), mine.event_id.decode()
        epoch = mine_id.split("-")[0]
        for header in (
            their_id,
            f"{epoch}-99",
            f"{epoch}--1",
            f"{epoch}-01",
            "not an id",
            "",
            "x" * 10_000,
            f"{epoch}-1, {epoch}-1",
        ):
            with fanout.subscribe("mine", header) as fresh:
                assert fresh.resume is Resume.UNKNOWN, header
                assert fresh.backlog == 0
                fanout.publish(b"live", session_id="mine")
                assert fresh.pending()[-1][1] == b"live"
                assert all(message != b"theirs only" for _, message in fresh.pending())


async def test_a_log_lingers_after_the_last_stream_then_goes(autojump_clock: trio.testing.MockClock) -> None:
    fanout = Fanout(ReplayLimits(linger_seconds=30))
    with fanout.subscribe("s") as stream:
        seen = stream.event_id.decode()
    await trio.sleep(29)
    fanout.publish(b"kept")
    with fanout.subscribe("s", seen) as again:
        assert again.resume is Resume.RESUMED and again.pending() == [(1, b"kept")]
        seen = again.event_id.decode()
    assert fanout.log_count == 1
    await trio.sleep(31)
    fanout.publish(b"nobody's")  # expires the idle log first: nothing is kept for it
    assert fanout.log_count == 0
    with fanout.subscribe("s", seen) as later:
        assert later.resume is Resume.UNKNOWN  # a new log, a new epoch


async def test_with_replay_off_nothing_is_kept_once_the_last_stream_closes() -> None:
    fanout = Fanout(ReplayLimits(events=0))
    with fanout.subscribe("s") as stream:
        fanout.publish(b"live")
        assert await stream.receive() == b"live"
        seen = stream.event_id.decode()
    assert fanout.log_count == 0
    with fanout.subscribe("s", seen) as again:
        assert again.resume is Resume.FRESH


async def test_a_request_for_a_client_is_kept_only_while_it_listens() -> None:
    fanout = Fanout()
    with fanout.subscribe("s") as stream:
        assert fanout.publish(b"ask", "s", only_if_listening=True) == 1
        assert stream.pending() == [(1, b"ask")]
        seen = stream.event_id.decode()
    assert fanout.publish(b"ask again", "s", only_if_listening=True) == 0
    with fanout.subscribe("s", seen) as again:
        assert again.pending() == []


async def test_a_broadcast_is_one_object_in_every_log() -> None:
    fanout = Fanout()
    message = b'{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}'
    with fanout.subscribe("a") as a, fanout.subscribe("b") as b:
        fanout.publish(message)
        assert a.pending()[0][1] is b.pending()[0][1] is message
