"""What counts as an email address where one comes from data (Tags, files, forms).

Only a plain `local@domain` address: a dot-atom local part and a domain of dot-separated labels
(letters, digits, hyphens), ASCII, at most 254 characters. A looser test would take
`x<victim@evil.example>` (an email library sends that to the address inside the angle brackets)
or `<script>…@x`, so an address from a billing file could redirect a PI's statements. A value that
is not a plain address is never a PI, and nobody is ever emailed at it.
"""

from __future__ import annotations

import re

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TOP_LABEL = r"[A-Za-z][A-Za-z0-9-]{0,61}[A-Za-z0-9]"  # a top-level domain: two characters or more
PLAIN_EMAIL = re.compile(rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@(?:{_LABEL}\.)+{_TOP_LABEL}", re.ASCII)


def is_plain_email(value: str) -> bool:
    """True for `local@domain` (see the module docstring); False for anything else."""
    if not value or len(value) > 254:
        return False
    match = PLAIN_EMAIL.fullmatch(value)
    return match is not None and len(match.group("local")) <= 64
