"""Keep secrets out of logs, errors, CLI output and alerts (docs/design.md, secrets)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

#: ``scheme://user:password@host`` → ``scheme://user:***@host``. The password runs to the
#: last ``@`` of the token: drivers (urllib's rpartition, SQLAlchemy) accept an unencoded
#: ``/`` or ``@`` in it, and masking a little too much is safe where too little is not.
_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>\S+)@"
)
#: Sentry DSNs carry their key as the user part: ``https://KEY@o1.ingest.sentry.io/1``.
_URL_USER_KEY = re.compile(r"(?P<scheme>https?://)(?P<key>[0-9a-fA-F]{16,})(?::[^@/\s]*)?@")
#: Slack incoming (and workflow) webhooks carry their secret in the path.
_SLACK_HOOK = re.compile(r"(hooks\.slack\.com/(?:services|workflows|triggers)/)[A-Za-z0-9/_-]+")

MASK = "***"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with URL passwords, DSN keys, webhook paths and given secrets masked."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _URL_USER_KEY.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _SLACK_HOOK.sub(rf"\1{MASK}", text)


#: Attributes every LogRecord has; anything else was passed in ``extra``.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Masks secrets in every record passing through a handler, including tracebacks."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        cleaned = redact(message, self.secrets)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        # Formatters such as the JSON one print ``extra`` fields too.
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(value, self.secrets))
        return True
