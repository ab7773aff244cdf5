"""Background loops that must never die: run one attempt after another, forever.

A service's long-running tasks (the outbox relay, the outbox monitor, ...) all need
the same plumbing: retry after a failure with exponential backoff, reset the backoff
after a good attempt, log an unexpected failure with its stack (and an expected,
transient one as a one-line warning, so an outage does not flood the log), and stop
promptly on cancellation. Written once here so each loop only says what one attempt
is. Log lines carry the error's type name only for transient errors: their messages
may quote data (a database error's detail can hold a row's values).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

from regsosek.db import Backoff

log = logging.getLogger("regsosek.background")


async def run_forever(
    name: str,
    attempt: Callable[[], Awaitable[object]],
    *,
    backoff: Backoff,
    expected: Callable[[BaseException], bool] = lambda e: False,
    on_error: Callable[[BaseException], Awaitable[None]] | None = None,
    logger: logging.Logger | None = None,
) -> NoReturn:
    """Await `attempt()` again and again until cancelled.

    An attempt that returns resets the backoff and the next one starts at once (an
    attempt that has nothing to do should wait inside, e.g. for a wake-up or a poll
    interval). An attempt that raises is logged (a warning when `expected(error)`,
    else with the stack), `on_error(error)` runs (e.g. to drop a broken client), and
    the next attempt waits for the backoff. `on_error` failing is logged, never fatal.
    Cancellation propagates immediately.
    """
    lg = logger or log
    while True:
        try:
            await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the loop outlives every failure by design
            if expected(e):
                lg.warning("%s interrupted, retrying", name, exc_info=True,
                           extra={"fields": {"task": name, "error": type(e).__name__, "retry_in_s": backoff.delay}})
            else:
                lg.exception("%s failed unexpectedly, retrying", name,
                             extra={"fields": {"task": name, "error": type(e).__name__, "retry_in_s": backoff.delay}})
            if on_error is not None:
                try:
                    await on_error(e)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001
                    lg.exception("%s: recovery after a failure failed", name, extra={"fields": {"task": name}})
            await backoff.wait()
        else:
            backoff.reset()
