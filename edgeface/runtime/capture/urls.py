"""Stream URLs: which ``--source`` texts name a network stream, and how to show one in a log without its password."""

from __future__ import annotations

import re

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


def redact_url(url: str) -> str:
    """A stream URL without its password, for logs.

    Camera passwords often hold '/' or '@' that users do not percent-encode, so everything from the first ':' after
    the user name to the last '@' before any query counts as the password: an '@' in the path hides more than it
    must, which is the safe side for a log."""
    return re.sub(r"(://[^:/@]*):[^?#]*@", r"\1:***@", url)
