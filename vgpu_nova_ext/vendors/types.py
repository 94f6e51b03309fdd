#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.
"""The types of the vendor plugin interface: what the core hands a plugin
(the licensing settings, the token as a :class:`Secret`) and what a plugin
hands back (the files and commands of one guest).

They live beside the plugin base, so the core and the plugins both import
them from here and neither imports the other.
"""

import dataclasses
import hashlib

LINUX = 'linux'
WINDOWS = 'windows'


class GuestRequestError(ValueError):
    """What an instance asks for (its metadata) cannot be honoured.

    The message names the key, the value and what is allowed; the rest of
    the guest's licensing is given all the same.
    """


class Secret:
    """A secret value that shows itself only as a fingerprint."""

    __slots__ = ('_value', 'shown')

    def __init__(self, value: bytes, shown: str | None = None) -> None:
        self._value = value
        #: What a command may print instead (the secret parts replaced by
        #: their fingerprints); None: only the fingerprint.
        self.shown = shown

    def reveal(self) -> bytes:
        return self._value

    @property
    def fingerprint(self) -> str:
        return 'sha256:' + hashlib.sha256(self._value).hexdigest()[:16]

    def __repr__(self) -> str:
        return '<secret %s>' % self.fingerprint

    __str__ = __repr__

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclasses.dataclass(frozen=True)
class LicensingSettings:
    enabled: bool
    token: Secret | None = None
    server_address: str | None = None
    server_port: int = 7070
    backup_server_address: str | None = None
    backup_server_port: int = 7070
    feature_type: str = 'auto'
    type_feature_types: tuple[tuple[str, str], ...] = ()
    """(type id, feature type) overrides from ``[mdev_<type>]``."""
    license_interval: int | None = None
    linger_interval: int | None = None
    enable_ui: bool = False
    vendor: str = 'nvidia'
    """The vendor plugin that says what a guest needs."""


@dataclasses.dataclass(frozen=True)
class GuestFile:
    path: str
    content: bytes | Secret
    mode: int

    def data(self) -> bytes:
        return (self.content.reveal() if isinstance(self.content, Secret)
                else self.content)


@dataclasses.dataclass(frozen=True)
class GuestLicensing:
    """What one guest receives."""

    files: tuple[GuestFile, ...]
    """Files written into the guest, at their paths there."""
    commands: tuple[tuple[str, ...], ...] = ()
    """Commands to run once the files are written (cloud-config runcmd)."""
