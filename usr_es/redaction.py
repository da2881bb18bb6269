"""Secrets never reach the log, meta.md or a projection: the redaction rule, and the text checks of
free-text command fields.

A command's free-text fields (`source`, `notes`, `note`, `reason`, the input `path`), the actor's tool
and run id, and every string in the arguments recorded with an event are redacted before anything is
written. The rule (docs/reliability.md):

- a value under a secret-looking key: `--token X`, `--api-key=X`, `{"password": X}`;
- in any text, `key=value` / `key: value` pairs whose key looks secret (`token=…`, `password: …`,
  `api_key=…`, `client_secret=…`), the password of URL credentials (`https://bob:…@host`), and known
  token shapes (GitHub, GitLab, Slack, AWS access keys, Google API keys, `sk-…`, `hf_…`, JWTs,
  `Bearer …`, PEM private keys).

Each match is replaced by `***REDACTED***`; the unredacted text is kept nowhere. A free-text field that
is not UTF-8 (Python keeps undecodable argv bytes as surrogates) is refused, except the input path,
which is recorded with the bytes escaped.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from .errors import InvalidInput

REDACTED = "***REDACTED***"
_SECRET_MARKERS = (
    "secret", "token", "password", "passwd", "pwd", "api_key", "apikey", "access_key", "private_key",
    "webhook", "auth", "credential", "bearer", "cookie", "session", "signature",
)  # fmt: skip
_TEXT_MARKERS = (*_SECRET_MARKERS, "authorization")
#: A secret-looking key in text: a marker as a whole word of it (`client_secret`, `x-api-key`, not `author`).
_KEY = (
    r"(?:[A-Za-z0-9]+[_.-])*(?:"
    + "|".join(m.replace("_", "[_-]?") for m in sorted(_TEXT_MARKERS, key=len, reverse=True))
    + r")(?:[_.-][A-Za-z0-9]+)*"
)
_PATTERNS = (
    # key=value, key: value (a scheme and its credential, a quoted value, or up to whitespace / a separator)
    (
        re.compile(rf"(?i)(\b{_KEY}\s*[=:]\s*)((?:bearer|basic|token)\s+\S+|\"[^\"]*\"|'[^']*'|[^\s&;,\"']+)"),
        rf"\g<1>{REDACTED}",
    ),
    # scheme://user:password@host
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)([^/\s@]+)(@)"), rf"\g<1>{REDACTED}\g<3>"),
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/-]{8,}=*"), rf"\g<1>{REDACTED}"),
    (
        re.compile(
            r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}"
            r"|xox[abposr]-[A-Za-z0-9-]{10,}|(?:AKIA|ASIA)[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35}"
            r"|sk-[A-Za-z0-9_-]{20,}|hf_[A-Za-z0-9]{30,}"
            r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
        ),
        REDACTED,
    ),
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL),
        REDACTED,
    ),
)
#: The free-text fields of commands (names shared by every command type that has them).
FREE_TEXT = ("source", "notes", "note", "reason")
PATH_FIELD = "path"

C = TypeVar("C", bound=msgspec.Struct)


def redact_text(text: str) -> str:
    """`text` with every secret-looking value replaced by `REDACTED`."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _is_secret(key: str) -> bool:
    lowered = key.lower().replace("-", "_")
    return any(marker in lowered for marker in _SECRET_MARKERS)


def redact(value: Any) -> Any:
    """Redact recursively: values under secret-looking keys, `--secret-flag value` argv tokens, and
    secrets inside every string (`redact_text`)."""
    if isinstance(value, dict):
        return {k: REDACTED if _is_secret(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        out: list[Any] = []
        hide_next = False
        for item in value:
            if hide_next:
                out.append(REDACTED)
                hide_next = False
                continue
            if isinstance(item, str) and item.startswith("--"):
                flag, eq, _ = item.partition("=")
                if _is_secret(flag[2:]):
                    if eq:
                        out.append(f"{flag}={REDACTED}")
                    else:
                        out.append(item)
                        hide_next = True
                    continue
            out.append(redact(item))
        return out
    if isinstance(value, str):
        return redact_text(value)
    return value


def checked_text(label: str, text: str) -> str:
    """`text`, refused with an InvalidInput naming `label` when it is not UTF-8 text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        byte = text[exc.start].encode("utf-8", "surrogateescape")
        raise InvalidInput(
            f"{label} is not UTF-8 text (byte 0x{byte.hex()} at character {exc.start + 1}).",
            hint="Pass UTF-8 text (check the terminal or the script's encoding).",
        ) from None
    return text


def escaped(text: str) -> str:
    """Text recorded as it came (a file name, an environment value): undecodable bytes escaped
    (`\\xff`), secrets redacted."""
    return redact_text(text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))


def clean_command(command: C) -> C:
    """The command as it may be recorded: free text checked to be UTF-8 and redacted, the input path
    escaped and redacted."""
    changes: dict[str, Any] = {}
    for name in FREE_TEXT:
        value = getattr(command, name, None)
        if isinstance(value, str) and value:
            changes[name] = redact_text(checked_text(f"--{name}", value))
    path = getattr(command, PATH_FIELD, None)
    if isinstance(path, str):
        changes[PATH_FIELD] = escaped(path)
    return msgspec.structs.replace(command, **changes) if changes else command
