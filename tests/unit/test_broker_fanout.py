import trio

from mcp_gateway.broker.fanout import Fanout


async def test_every_stream_gets_a_message_and_a_full_queue_drops_only_for_its_client() -> None:
    fanout = Fanout(queue_size=2)
    with fanout.subscribe("slow") as slow, fanout.subscribe("fast") as fast:
        for n in range(3):
            fanout.publish(b"m%d" % n)
            assert await fast.receive() == b"m%d" % n
        assert [slow.receive_nowait(), slow.receive_nowait()] == [b"m0", b"m1"]
        assert fanout.dropped == 1
        assert fanout.delivered == 5
    assert fanout.stream_count == 0


async def test_publishing_to_one_session_reaches_only_its_streams() -> None:
    fanout = Fanout()
    with fanout.subscribe("a") as a, fanout.subscribe("b") as b:
        assert fanout.publish(b"for a", session_id="a") == 1
        assert a.receive_nowait() == b"for a"
        try:
            b.receive_nowait()
        except trio.WouldBlock:
            pass
        else:
            raise AssertionError("b received a message for a")


async def test_closing_a_session_ends_its_streams() -> None:
    fanout = Fanout()
    with fanout.subscribe("gone") as gone, fanout.subscribe("kept") as kept:
        fanout.close_session("gone")
        try:
            await gone.receive()
        except trio.EndOfChannel:
            pass
        else:
            raise AssertionError("stream of a deleted session stayed open")
        assert fanout.publish(b"x") == 1
        assert kept.receive_nowait() == b"x"
