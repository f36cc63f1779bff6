"""Authenticity of backup archives: `backup` signs the manifest with an HMAC-SHA256 key, and
`restore` (and `restore --check`) refuse an archive whose signature does not verify.

The manifest holds the sha256 of every other member, so its signature covers the whole archive:
a member changed and re-hashed into the manifest breaks the signature. The key is
OPENCHARGEBACK_BACKUP_KEY, or else the key file (OPENCHARGEBACK_BACKUP_KEY_FILE, by default
`backup.key` in the data dir), which the first backup creates and prints once. Restoring on
another machine needs the same key. `--unsigned` restores an archive without checking (a backup
made before archives were signed, or a lost key): an explicit decision, never a default.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from chargeback.errors import Refused

SIGNATURE = "manifest.sig"
ALGORITHM = "HMAC-SHA256"


@dataclass(frozen=True)
class BackupKey:
    secret: bytes
    origin: str  # where it came from: the setting's name or the key file's path
    created: str = ""  # the new key's text, when this call created the key file

    @property
    def key_id(self) -> str:
        """A fingerprint that names the key without revealing it."""
        return hashlib.sha256(b"openchargeback backup key\0" + self.secret).hexdigest()[:16]


def _key_file() -> Path:
    return Path(settings.OPENCHARGEBACK_BACKUP_KEY_FILE)


def backup_key(*, create: bool = False) -> BackupKey | None:
    """The installation's backup key; with `create`, a new key file when there is none."""
    configured = (settings.OPENCHARGEBACK_BACKUP_KEY or "").strip()
    if configured:
        return BackupKey(configured.encode(), "OPENCHARGEBACK_BACKUP_KEY")
    path = _key_file()
    if path.is_file():
        text = path.read_text(encoding="utf-8").strip()
        if not text:
            raise Refused(f"the backup key file {path} is empty")
        return BackupKey(text.encode(), str(path))
    if not create:
        return None
    text = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another backup created it just now
        return backup_key()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    return BackupKey(text.encode(), str(path), created=text)


def sign(manifest: bytes, key: BackupKey) -> bytes:
    """The signature member of an archive whose manifest is `manifest` (its exact bytes)."""
    digest = hmac.new(key.secret, manifest, hashlib.sha256).hexdigest()
    return json.dumps({"algorithm": ALGORITHM, "key_id": key.key_id, "signature": digest}, indent=2).encode()


def verify(archive: Path, manifest: bytes, signature: bytes | None, *, unsigned: bool) -> str:
    """Check the manifest's signature; returns "verified", or "not checked" with `unsigned`.
    Raises Refused, saying what to do, when it cannot be verified."""
    if unsigned:
        return "not checked (--unsigned)"
    if signature is None:
        raise Refused(
            f"{archive} is not signed (a backup made before archives were signed, or not made by "
            "`openchargeback backup`); restore it only if you trust where it came from, with --unsigned"
        )
    key = backup_key()
    if key is None:
        raise Refused(
            f"cannot verify the signature of {archive}: this installation has no backup key "
            f"(set OPENCHARGEBACK_BACKUP_KEY, or put the key file of the installation that made it at "
            f"{_key_file()}); or restore without checking, with --unsigned"
        )
    try:
        document = json.loads(signature)
        claimed, algorithm, key_id = document["signature"], document["algorithm"], document["key_id"]
    except (ValueError, KeyError, TypeError):
        raise Refused(f"the signature of {archive} is unreadable; nothing was restored") from None
    if algorithm != ALGORITHM:
        raise Refused(f"the signature of {archive} uses {algorithm!r}; this version checks {ALGORITHM}")
    if key_id != key.key_id:
        raise Refused(
            f"{archive} was signed with another backup key (key id {key_id}; this installation's, from "
            f"{key.origin}, is {key.key_id}); set OPENCHARGEBACK_BACKUP_KEY to the key that made it"
        )
    expected = hmac.new(key.secret, manifest, hashlib.sha256).hexdigest()
    if not isinstance(claimed, str) or not hmac.compare_digest(expected, claimed):
        raise Refused(
            f"the signature of {archive} does not verify: the archive was changed after it was made; "
            "nothing was restored"
        )
    return "verified"
