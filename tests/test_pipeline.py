"""The decoding pipeline's threads: how they share the CPU."""

from __future__ import annotations

import os
import threading

import pytest

from featcache.pipeline import _lower_priority


@pytest.mark.skipif(not hasattr(os, "getpriority") or not hasattr(threading, "get_native_id"),
                    reason="per-thread nice values are a Linux feature")
def test_decoders_yield_relative_to_their_process_not_to_the_whole_machine():
    seen = {}

    def decoder():
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        _lower_priority(3)
        seen["after"] = os.getpriority(os.PRIO_PROCESS, tid)
        seen["before"] = before
        _lower_priority(100)  # never past the lowest priority
        seen["capped"] = os.getpriority(os.PRIO_PROCESS, tid)

    thread = threading.Thread(target=decoder)
    thread.start()
    thread.join()
    assert seen["after"] == min(19, seen["before"] + 3)
    assert seen["capped"] == 19
