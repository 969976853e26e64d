"""What native code writes to file descriptor 2 (gRPC's C core) becomes JSON log
lines among the others, in a process of its own, as a service's is."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import logging, os, threading
from services.runtime.logs import capture_native_stderr, setup_logging

capture_native_stderr()
setup_logging("probe", "json")
seen = threading.Event()

class Sentinel(logging.Handler):
    def emit(self, record):
        if record.getMessage() == "the end":
            seen.set()

logging.getLogger("native").addHandler(Sentinel())
# As the C core writes: straight to the descriptor, past Python's sys.stderr.
os.write(2, b"E1204 12:00:00.123456   42 chttp2_transport.cc:1403] GOAWAY received\n")
os.write(2, b"some raw text\n")
os.write(2, b"I1204 12:00:00.200000   42 probe.cc:1] the end\n")
assert seen.wait(10), "the native lines were not forwarded"
logging.getLogger("probe").info("python's own line")
"""


def test_native_stderr_lines_become_json_log_lines() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # every one is JSON
    by_msg = {line["msg"]: line for line in lines}
    goaway = by_msg["GOAWAY received"]
    assert (goaway["level"], goaway["logger"]) == ("error", "native")
    assert goaway["source"] == "chttp2_transport.cc:1403"
    assert by_msg["some raw text"]["level"] == "warning"
    assert by_msg["python's own line"]["service"] == "probe"
