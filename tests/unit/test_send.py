"""`kpi-stream send` without a broker: lines read exactly as replay reads them, and what it says
while it sends (a bar on a terminal, a counts line every few seconds elsewhere) and at the end.
Sending itself is tested against a real broker in tests/integration/test_send.py."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest

from stream.replay import read_lines as replay_read_lines
from stream.send import (CountsLine, SendReport, TerminalBar, format_bar, format_counts, format_summary, human_bytes,
                         read_lines)

TRICKY = [
    b"",
    b"\n",
    b"\n\n\n",
    b'{"a": 1}',
    b'{"a": 1}\n',
    b'{"a": 1}\r\n{"b": 2}\r\n',
    b'{"a": 1}\n\n{"b": 2}\n  \n\xff\xfe\x80\n{"c": 3}',
    b"x" * 5000 + b"\n" + b"y" * 3 + b"\n" + b"z" * 4097,
]


def sent_lines(path, chunk_bytes: int) -> tuple[list[bytes], int]:
    async def read() -> tuple[list[bytes], int]:
        lines, total = [], 0
        with open(path, "rb") as handle:
            async for chunk, size in read_lines(handle, chunk_bytes):
                lines += chunk
                total += size
        return lines, total

    return asyncio.run(read())


@pytest.mark.parametrize("content", TRICKY)
@pytest.mark.parametrize("chunk_bytes", [1, 3, 7, 4096, 262_144])
def test_lines_are_read_as_replay_reads_them_whatever_the_chunks(tmp_path, content, chunk_bytes):
    path = tmp_path / "events.jsonl"
    path.write_bytes(content)
    lines, total = sent_lines(path, chunk_bytes)
    assert lines == list(replay_read_lines(path))
    assert total == len(content)


def test_bytes_are_shown_in_binary_units():
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536, 52_520_110, 3 * 1024**3, 5000 * 1024**3)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "50.1 MiB", "3.0 GiB", "5000.0 GiB"]


def test_the_bar_fills_by_bytes_read_and_says_how_long_is_left():
    assert format_bar(512, 1024, 1200, 2.0, width=10) == \
        "[#####.....]  50%  1,200 lines  512 B  600 lines/s  ETA 2s"
    assert format_bar(1024, 1024, 2400, 4.0, width=10) == "[##########] 100%  2,400 lines  1.0 KiB  600 lines/s"
    assert format_bar(0, 1024, 0, 0.0, width=10) == "[..........]   0%  0 lines  0 B  0 lines/s"


def test_without_a_known_size_the_bar_is_the_counts_alone():
    assert format_bar(2_000_000, None, 12_345, 2.0) == "12,345 lines  1.9 MiB  6,172 lines/s"


def report(**by_topic: int) -> SendReport:
    return SendReport(lines=sum(by_topic.values()), bytes=250 * sum(by_topic.values()),
                      by_topic={topic.replace("_", "."): count for topic, count in by_topic.items()}, seconds=2.0)


def test_the_counts_line_gives_lines_bytes_rate_and_each_topic_in_name_order():
    assert format_counts(report(sales_orders=3000, sales_events=2, sales_leads=998), 2.0) == (
        "sent 4,000 lines (976.6 KiB) in 2s, 2,000 lines/s: sales.events 2, sales.leads 998, sales.orders 3,000")


def test_the_summary_gives_lines_read_and_sent_bytes_seconds_rate_and_each_topic():
    assert format_summary(report(sales_orders=3000, sales_events=2, sales_leads=998)) == (
        "4,000 lines read, 4,000 sent (1,000,000 bytes, 976.6 KiB) in 2.00s, 2,000 lines/s: "
        "sales.events 2, sales.leads 998, sales.orders 3,000")
    assert format_summary(SendReport()) == "0 lines read, 0 sent (0 bytes, 0 B) in 0.00s, 0 lines/s: nothing"


def test_the_summary_names_lines_too_large_to_send():
    too_large = report(sales_orders=10)
    too_large.lines += 12
    too_large.too_large = list(range(100, 112))
    assert format_summary(too_large).endswith(
        "; NOT sent, over 1.0 MiB: line 100, 101, 102, 103, 104, 105, 106, 107, 108, 109 and 2 more")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_terminal_bar_redraws_in_place_at_most_every_interval_and_clears_itself():
    out, clock = io.StringIO(), FakeClock()
    bar = TerminalBar(out, None, every=0.1, clock=clock)
    bar.update(report(sales_orders=12_000), 3_000_000, 2.0)
    clock.now += 0.05
    bar.update(report(sales_orders=13_000), 3_500_000, 2.05)  # too soon: not drawn
    clock.now += 0.1
    bar.update(report(sales_orders=3), 900, 2.15)
    bar.finish()
    first, second = "12,000 lines  2.9 MiB  6,000 lines/s", "3 lines  900 B  1 lines/s"
    assert out.getvalue() == ("\r" + first + "\r" + second.ljust(len(first)) + "\r" + " " * len(second) + "\r")


def test_the_counts_line_is_logged_every_interval(caplog):
    clock = FakeClock()
    line = CountsLine(every=5.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="stream.send"):
        for _ in range(12):  # an update a second
            clock.now += 1.0
            line.update(report(sales_orders=10), 2500, 1.0)
        line.finish()
    assert [record.getMessage() for record in caplog.records] == [format_counts(report(sales_orders=10), 1.0)] * 2
