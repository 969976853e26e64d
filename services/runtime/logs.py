"""Structured logging: JSON lines when stderr is not a terminal.

Each line carries the context of the call it was written in (the RPC, the
calling party, the idempotency key), taken when the record is made, and any
``extra`` fields the caller gave.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from contextvars import ContextVar
from typing import Any, TextIO

from opentelemetry import trace

__all__ = [
    "LOG_FIELDS",
    "LOG_LEVELS",
    "JsonFormatter",
    "capture_native_stderr",
    "dump_tasks",
    "install_stack_dumps",
    "setup_logging",
]

#: The current call's fields for every log line written within it (one dict per call).
LOG_FIELDS: ContextVar[dict[str, str]] = ContextVar("scf_log_fields", default={})  # noqa: B039
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
              "error": logging.ERROR}  # fmt: skip

#: What every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_make_record = logging.getLogRecordFactory()


def _record_with_context(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _make_record(*args, **kwargs)
    fields = dict(LOG_FIELDS.get())
    span = trace.get_current_span().get_span_context()
    if span.is_valid:  # the trace this line belongs to, wherever it was written
        fields["trace_id"] = format(span.trace_id, "032x")
    record.scf_context = fields
    return record


logging.setLogRecordFactory(_record_with_context)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "scf_context", {}))
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "scf_context":
                out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


#: gRPC's C core writes absl-style lines, "E1204 12:00:00.123 42 file.cc:7] text".
_NATIVE_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([^\]]+)\] ?(.*)$")
_NATIVE_LEVELS = {
    "I": logging.INFO,
    "W": logging.WARNING,
    "E": logging.ERROR,
    "F": logging.CRITICAL,
}


def capture_native_stderr() -> None:
    """Route what native code writes to file descriptor 2 (gRPC's C core, mostly)
    through logging, so that it lands as JSON lines among the others rather than
    as raw text. Python's own ``sys.stderr`` keeps the real stream. Call before
    :func:`setup_logging`; in a service's own process only."""
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = os.fdopen(real, "w", buffering=1, errors="backslashreplace")
    threading.Thread(target=_forward_native, args=(read_end,), daemon=True).start()


def _forward_native(fd: int) -> None:
    logger = logging.getLogger("native")
    with os.fdopen(fd, "r", errors="backslashreplace") as lines:
        for line in lines:  # it must never stop reading, or the writers block
            text = line.rstrip("\n")
            if not text:
                continue
            match = _NATIVE_LINE.match(text)
            if match is None:
                logger.warning("%s", text)
            else:
                level, where, message = match.groups()
                logger.log(_NATIVE_LEVELS[level], "%s", message, extra={"source": where})


def setup_logging(service: str, fmt: str = "auto", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    if use_json:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("nats").setLevel(logging.WARNING)
    logging.captureWarnings(True)  # Python's warnings as log lines, not raw text


def dump_tasks(out: TextIO | None = None) -> None:
    """Write every asyncio task's stack: where each one waits right now."""
    out = out or sys.stderr
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    print(f"--- {len(tasks)} asyncio tasks ---", file=out)
    for task in tasks:
        print(f"task {task.get_name()}:", file=out)
        # Down the chain of awaits, to what the task waits on; by hand, because
        # Task.get_stack shows only the outermost coroutine (and print_stack
        # fails on compiled ones).
        awaited: Any = task.get_coro()
        for _ in range(50):
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is not None:
                code = frame.f_code
                print(f"  {code.co_filename}:{frame.f_lineno} in {code.co_name}", file=out)
            else:
                print(f"  {awaited!r}", file=out)
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
            if awaited is None:
                break
    out.flush()


def install_stack_dumps() -> None:
    """``kill -USR1 <pid>`` dumps the asyncio tasks' stacks to the log (a service
    alive but idle); ``kill -USR2`` dumps the threads' stacks, even when the
    event loop itself is blocked. For the operator's "why is it stuck"."""
    faulthandler.register(signal.SIGUSR2, file=sys.stderr, all_threads=True)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
