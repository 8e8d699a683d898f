"""Keep secrets out of logs, errors, CLI output and alerts (docs/design.md, secrets).

Two kinds of masking, both in time linear in the text (an actor may raise an error of
megabytes, and Python's ``re`` holds the GIL while it runs: a quadratic pattern there
stalls every thread of the process):

- by shape: a URL's password, a Sentry DSN's key, a Slack webhook's path;
- by value: the secrets this process was configured with (``configure``), wherever they
  appear, with or without a URL around them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "***"

#: A whole run of URL-scheme characters (RFC 3986) ending in "://". The lookbehind makes
#: every start inside a run fail at once, so a long run is scanned once, not once per
#: character (the quadratic ``[a-z][a-z0-9+.-]*://`` froze the process on 80 kB errors).
_SCHEME_RUN = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z0-9+.\-]*://")
_LETTER = re.compile(r"[A-Za-z]")
_USER_END = re.compile(r"[:/@]")
#: A maximal run of non-space characters: URLs never contain white space.
_TOKEN = re.compile(r"\S+")
#: Sentry DSNs carry their key as the user part: ``https://KEY@o1.ingest.sentry.io/1``.
#: Linear: it can only start at "http", and each part stops at a character the next
#: attempt starts after.
_URL_USER_KEY = re.compile(r"(?P<scheme>https?://)(?P<key>[0-9a-fA-F]{16,})(?::[^@/\s]*)?@")
#: Slack incoming (and workflow) webhooks carry their secret in the path.
_SLACK_HOOK = re.compile(r"(hooks\.slack\.com/(?:services|workflows|triggers)/)[A-Za-z0-9/_-]+")

#: Configured secrets (``configure``), longest first so a URL goes before its password.
_configured: tuple[str, ...] = ()


def configure(secrets: Iterable[str]) -> None:
    """Mask these values in every later ``redact`` call of this process.

    Called once by each entry point with the URLs, passwords and keys of its settings,
    so a stored error, an alert or a CLI line masks them without being handed them.
    """
    global _configured
    _configured = tuple(sorted({s for s in secrets if _worth_masking(s)}, key=len, reverse=True))


def configured() -> tuple[str, ...]:
    return _configured


def _worth_masking(secret: str) -> bool:
    # Masking every "a" or "pw" would destroy the text and protect nothing.
    return len(secret) >= 4


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL passwords, DSN keys, webhook paths and known secrets masked."""
    return _redact(text, (*_configured, *(s for s in secrets if _worth_masking(s))))


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    """``redact`` with its secrets already chosen (all worth masking)."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if "://" in text:
        text = _mask_url_passwords(text)
        text = _URL_USER_KEY.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    if "hooks.slack.com/" in text:
        text = _SLACK_HOOK.sub(rf"\1{MASK}", text)
    return text


def _mask_url_passwords(text: str) -> str:
    """``scheme://user:password@host`` → ``scheme://user:***@host``, in linear time.

    The password runs to the last ``@`` of the token: drivers (urllib's rpartition,
    SQLAlchemy) accept an unencoded ``/`` or ``@`` in it, and masking a little too much
    is safe where too little is not. A token is scanned a bounded number of times.
    """
    out: list[str] = []
    done = 0
    for token in _TOKEN.finditer(text):
        span = _password_span(token.group())
        if span is not None:
            start = token.start()
            out.append(text[done : start + span[0]])
            out.append(MASK)
            done = start + span[1]
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


def _password_span(token: str) -> tuple[int, int] | None:
    """Where the password of the first ``scheme://user:password@`` in ``token`` is."""
    last_at = token.rfind("@")
    if last_at < 0:
        return None
    for run in _SCHEME_RUN.finditer(token, 0, last_at):
        after = run.end()
        # A scheme starts with a letter: the match begins at the run's first letter.
        if _LETTER.search(token, run.start(), after - 3) is None:
            continue
        # The user part ends at the first ':' '/' or '@'; it must end at a ':'.
        end = _USER_END.search(token, after)
        if end is not None and end.group() == ":" and last_at > end.start() + 1:
            return end.start() + 1, last_at
    return None


def printable(text: str) -> str:
    """``text`` as one line safe on a terminal: every character that is not printable
    (controls and escape sequences, line breaks, bidi overrides, unassigned code points,
    lone surrogates that would fail to encode) written as its escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    known = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    if char in known:
        return known[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def shown(text: str) -> str:
    """``text`` fit to print: secrets masked and control characters escaped."""
    return printable(redact(text))


#: Attributes every LogRecord has; anything else was passed in ``extra``.
STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Masks secrets in every record passing through a handler, including tracebacks."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]
        # What every record is masked with: the filter's secrets and the configured ones,
        # chosen once (a worker logs a line per attempt from each thread) and again only
        # when ``configure`` changes them.
        self._seen: tuple[str, ...] | None = None
        self._all: tuple[str, ...] = ()

    def filter(self, record: logging.LogRecord) -> bool:
        configured = _configured  # once: configure() may replace it meanwhile
        if self._seen is not configured:
            own = tuple(s for s in self.secrets if _worth_masking(s))
            self._all, self._seen = (*configured, *own), configured
        secrets = self._all
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        cleaned = _redact(message, secrets)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_text:
            record.exc_text = _redact(record.exc_text, secrets)
        # Formatters such as the JSON one print ``extra`` fields too. Values are replaced,
        # never added: the record's attributes can be walked while they change.
        fields = record.__dict__
        for key, value in fields.items():
            if isinstance(value, str) and key not in STANDARD_ATTRS:
                fields[key] = _redact(value, secrets)
        return True
