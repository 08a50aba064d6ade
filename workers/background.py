"""A worker's own loop beside Prefect's: one cycle every few seconds, stopped with the worker.

A failing cycle is logged and the next one tries again: the worker must keep running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable


def every(
    seconds: float,
    cycle: Callable[[], Awaitable[object]],
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    what: str,
) -> asyncio.Task[None]:
    """Run `cycle` now and every `seconds` after it ends, until the task is stopped."""

    async def loop() -> None:
        while True:
            try:
                await cycle()
            except Exception:
                logger.exception("%s failed; trying again", what)
            await asyncio.sleep(seconds)

    return asyncio.create_task(loop())


async def stop(task: asyncio.Task[None] | None) -> None:
    """Cancel the loop and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
