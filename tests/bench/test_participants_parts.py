"""The instruments of bench/bench_participants.py: framing, percentiles, pacing, /proc arithmetic.

A benchmark whose framing drops bytes or whose percentiles are off measures nothing; these are
checked here without a proxy (bench/ is not a package: its folder is put on the path).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from participants_report import Outcome
from participants_wire import (
    OP_BINARY,
    OP_CLOSE,
    Histogram,
    Link,
    Pacer,
    accept_key,
    frame,
    parse_head,
    take_frames,
)
from procstats import TICKS, Proc, Snapshot, Usage, members


def test_accept_key_is_rfc_6455s_example() -> None:
    # RFC 6455 section 1.3
    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("masked", [True, False])
def test_frames_round_trip_at_every_length_encoding(length: int, masked: bool) -> None:
    payload = bytes(random.randrange(256) for _ in range(length))
    buffer = bytearray(frame(payload, masked=masked) + frame(b"next", masked=masked))
    assert take_frames(buffer) == [(OP_BINARY, payload), (OP_BINARY, b"next")]
    assert buffer == b""


def test_a_frame_is_taken_only_once_complete_and_the_rest_stays() -> None:
    data = frame(b"x" * 300, masked=True) + frame(b"", masked=False, opcode=OP_CLOSE)
    buffer = bytearray()
    taken = []
    for byte in data:
        buffer.append(byte)
        taken += take_frames(buffer)
        if len(taken) == 0:
            assert len(buffer) > 0  # nothing consumed before the frame is whole
    assert taken == [(OP_BINARY, b"x" * 300), (OP_CLOSE, b"")]
    assert buffer == b""


def test_a_frame_masked_with_a_real_key_is_unmasked() -> None:
    key = bytes([0x37, 0xFA, 0x21, 0x3D])
    payload = b"Hello, Chime"
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    buffer = bytearray(bytes([0x82, 0x80 | len(payload)]) + key + masked)
    assert take_frames(buffer) == [(OP_BINARY, payload)]


def test_parse_head_keeps_every_copy_by_lowercase_name() -> None:
    first, fields = parse_head(
        b"HTTP/1.1 101 Switching Protocols\r\nX-A: 1\r\nx-a: 2\r\nUpgrade:  websocket \r\n\r\n"
    )
    assert first == "HTTP/1.1 101 Switching Protocols"
    assert fields == {"x-a": ["1", "2"], "upgrade": ["websocket"]}


def exact(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]


def test_histogram_percentiles_are_within_half_a_percent() -> None:
    rng = random.Random(14)
    samples = [rng.lognormvariate(7, 1.5) for _ in range(20_000)]  # ~1 ms, long tail
    histogram = Histogram()
    for sample in samples:
        histogram.add(sample)
    for q in (1, 50, 90, 99, 99.9):
        assert histogram.percentile(q) == pytest.approx(exact(samples, q), rel=0.005)
    assert histogram.percentile(100) == max(samples)
    assert histogram.count == len(samples)


def test_histograms_merge_and_travel_as_json_without_loss() -> None:
    rng = random.Random(1)
    parts = [Histogram() for _ in range(3)]
    whole = Histogram()
    for _ in range(3000):
        value = rng.uniform(0.5, 50_000)
        parts[rng.randrange(3)].add(value)
        whole.add(value)
    merged = Histogram.merged(Histogram.from_json(part.to_json()) for part in parts)
    assert merged.counts == whole.counts
    assert (merged.count, merged.max) == (whole.count, whole.max)
    assert math.isnan(Histogram().percentile(50))


@pytest.mark.parametrize("count", [1, 2, 3, 5, 10, 50, 120, 499])
def test_pacer_spreads_any_number_of_members_over_the_period(count: int) -> None:
    pacer: Pacer[int] = Pacer(1.0, lambda member: None)
    times = sorted(pacer.slot(index) * pacer.interval for index in range(count))
    gaps = [
        later - earlier for earlier, later in zip(times, [*times[1:], times[0] + 1.0], strict=True)
    ]
    # Evenly would be 1/count apart; a burst (members in consecutive slots) leaves one gap of
    # nearly the whole period. The golden-ratio stride keeps every gap within 2.7x the even one.
    assert max(gaps) <= 2.7 / count + pacer.interval


def test_pacer_gives_every_member_a_slot_when_there_are_more_members_than_slots() -> None:
    pacer: Pacer[int] = Pacer(0.02, lambda member: None)
    for index in range(25):
        pacer.add(index, index)
    sizes = sorted(len(group) for group in pacer.members)
    assert sum(sizes) == 25 and sizes[-1] - sizes[0] <= 1


async def test_link_hands_on_the_bytes_after_the_head_in_one_write() -> None:
    received: list[bytes] = []
    handed = asyncio.Event()

    class Server(Link):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            asyncio.get_running_loop().create_task(self.serve())

        async def serve(self) -> None:
            received.append(await self.read_head())
            self.switch(self.take)

        def take(self, data: bytes) -> None:
            received.append(data)
            handed.set()

    server = await asyncio.get_running_loop().create_server(Server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nafter the head")
    await asyncio.wait_for(handed.wait(), 10)
    assert received == [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"after the head"]
    writer.close()
    server.close()


def proc(pid: int, ppid: int, session: int, ticks: int = 0) -> Proc:
    return Proc(pid, ppid, session, ticks, rss=0)


def test_a_group_is_its_roots_descendants_and_sessions() -> None:
    table = {
        p.pid: p
        for p in (
            proc(10, 1, 10),  # the proxy command, leader of its session
            proc(11, 10, 10),  # a worker
            proc(12, 11, 10),  # the worker's child
            proc(13, 1, 10),  # daemonised (reparented to init) but still in the session
            proc(20, 1, 20),  # someone else's process
        )
    }
    assert members(table, [10], sessions=True) == [10, 11, 12, 13]
    assert members(table, [10], sessions=False) == [10, 11, 12]
    assert members(table, [99], sessions=False) == []


def test_usage_counts_each_process_between_snapshots() -> None:
    t = TICKS  # ticks per second
    before = Snapshot(at=0.0, busy=0, ticks={"proxy": {1: 0, 2: t // 2}}, waited={})
    after = Snapshot(
        at=2.0,
        busy=2 * 2 * t,  # 2 cores busy for 2 s
        ticks={"proxy": {1: t, 2: t + t // 2, 3: t // 2}},
        waited={"proxy": 500_000_000},
    )
    usage = Usage.between(before, after)
    # 1 used 1 s, 2 used 1 s, 3 (born in between) 0.5 s: 2.5 s in 2 s of wall time
    assert usage.cores["proxy"] == pytest.approx(1.25)
    assert usage.busiest["proxy"] == pytest.approx(0.5)
    assert usage.waiting["proxy"] == pytest.approx(0.25)
    assert usage.machine == pytest.approx(min(2.0, len(os.sched_getaffinity(0))))
    assert usage.others == pytest.approx(max(0.0, usage.machine - 1.25))


def test_outcome_derives_rates_timeouts_and_memory_per_participant() -> None:
    outcome = Outcome(target="proxy", round=1, scenario="signaling", joined=100, seconds=10)
    outcome.counts = {"sent": 1000, "echoed": 990}
    outcome.proxy_rss_before, outcome.proxy_rss_joined = 50 << 20, 60 << 20
    outcome.add_errors({"timeout": 2}, {"timeout": "join took more than 30 s"}, "join")
    assert outcome.round_trips == 99
    assert outcome.timeouts == 10
    assert outcome.error_count == 12
    assert outcome.rss_per_participant == pytest.approx((10 << 20) / 100)
    assert outcome.examples == {"join timeout": "join took more than 30 s"}
    # each echoed message crossed the proxy twice; the server's own stream once
    outcome.counts["stream_received"] = 500
    outcome.proxy_rss_growth = 249_000
    assert outcome.relayed == 2 * 990 + 500
    assert outcome.growth_per_message == pytest.approx(249_000 / 2480)


def test_the_tls_memory_bench_measures_pairs() -> None:
    bench = Path(__file__).resolve().parents[2] / "bench" / "bench_tls_memory.py"
    run = subprocess.run(
        [sys.executable, str(bench), "--pairs", "20"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert re.fullmatch(
        r"OpenSSL .+, groups default, handshaken: 20 pairs, RSS -?[\d.]+ KiB, "
        r"malloc in use [\d.]+ KiB per pair\n",
        run.stdout,
    ), run.stdout
