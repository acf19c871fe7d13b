"""One short line, not an ERROR with a traceback, for each malformed HTTP request.

aiohttp answers a bad request line or header (16 KB headers, 200 of them, garbage) with
400 itself, then logs it as an error with its parser's traceback: 500 such requests from
one scanner wrote 421 KB of log. They are the client's fault and routine on the internet.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

MAX_DETAIL_CHARS = 120


class MalformedRequestFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        detail = " ".join(str(error.message).split())[:MAX_DETAIL_CHARS]
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg = "refused a malformed HTTP request from %s: %s %s"
        record.args = (remote, error.code, detail)
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_FILTER = MalformedRequestFilter()


def quiet_malformed_requests() -> None:
    """Install the filter on aiohttp's server logger (once per process)."""
    logger = logging.getLogger("aiohttp.server")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
