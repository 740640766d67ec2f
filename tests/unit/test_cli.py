"""KPI_EVENT_LOOP: the worker's loop, and the loop faust's consumer thread makes for itself."""

import asyncio
import threading

import pytest
import uvloop

from stream.cli import new_event_loop
from stream.core.config import ConfigError, ServiceSettings, event_loop_from_env


@pytest.fixture(autouse=True)
def restore_policy():
    policy = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(policy)


def loop_made_in_another_thread() -> asyncio.AbstractEventLoop:
    made = []
    thread = threading.Thread(target=lambda: made.append(asyncio.new_event_loop()))
    thread.start()
    thread.join()
    return made[0]


def test_the_worker_runs_on_uvloop_unless_told_otherwise_and_so_does_the_consumer_thread():
    assert ServiceSettings.from_env({}).event_loop == "uvloop"
    loop = new_event_loop(ServiceSettings.from_env({}).event_loop)
    other = loop_made_in_another_thread()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert isinstance(other, uvloop.Loop)
    finally:
        loop.close()
        other.close()


def test_kpi_event_loop_asyncio_gives_the_standard_library_loop_everywhere():
    new_event_loop("uvloop").close()  # a policy set before must not linger
    loop = new_event_loop(ServiceSettings.from_env({"KPI_EVENT_LOOP": " AsyncIO "}).event_loop)
    other = loop_made_in_another_thread()
    try:
        assert not isinstance(loop, uvloop.Loop) and isinstance(loop, asyncio.BaseEventLoop)
        assert not isinstance(other, uvloop.Loop)
    finally:
        loop.close()
        other.close()


def test_an_unknown_event_loop_is_refused_by_name():
    with pytest.raises(ConfigError, match="KPI_EVENT_LOOP must be one of uvloop, asyncio: 'trio'"):
        event_loop_from_env({"KPI_EVENT_LOOP": "trio"})
