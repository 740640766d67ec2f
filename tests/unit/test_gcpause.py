"""Bulk loads pause the cyclic GC and always restore the caller's setting (stream/gcpause.py)."""

import gc

import pytest

from stream.gcpause import cyclic_gc_paused


def test_the_collector_is_off_inside_and_on_again_after_even_when_the_load_fails():
    gc.enable()
    with pytest.raises(RuntimeError):
        with cyclic_gc_paused():
            assert not gc.isenabled()
            raise RuntimeError("a bad fact")
    assert gc.isenabled()


def test_a_collector_the_caller_had_switched_off_stays_off():
    gc.disable()
    try:
        with cyclic_gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
