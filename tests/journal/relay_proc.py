"""A producer's relay as its own process, for crash tests.

``python -m tests.journal.relay_proc``
"""

from __future__ import annotations

import asyncio

from services.runtime.config import Settings
from tests.journal.helpers import producer


async def main() -> None:
    async with producer(Settings.from_env()):
        await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main())
