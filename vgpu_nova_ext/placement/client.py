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
"""Placement through openstacksdk, for everything outside nova-compute.

The demo, the read-only audit and the vendordata service reach Placement
here, with a keystoneauth session from the standard ``[placement]``
options. Inside nova-compute, Nova's own report client writes the tree
the driver fills; nothing here runs there.

Connection failures and 5xx answers are retried with backoff by
keystoneauth (bounded); a generation conflict (409) is the caller's to
retry after a refresh (see :mod:`vgpu_nova_ext.placement.publish`).
"""

from collections.abc import Callable

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading
from keystoneauth1 import session as ks_session
import openstack.connection
from oslo_log import log as logging

from vgpu_nova_ext.conf import placement as placement_conf
from vgpu_nova_ext import exception

LOG = logging.getLogger(__name__)
# 1.39: the newest of Placement 2023.1 and later; any-traits, consumer
# types, mappings in allocation candidates.
MICROVERSION = '1.39'
RETRIES = 3
NOAUTH_ROLES = 'admin,service,member,reader'


class PlacementError(exception.VGPUNovaExtError):
    code = 'vgpu_nova_ext.placement'

    def __init__(self, message: str, status: int | None = None,
                 placement_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.placement_code = placement_code


class PlacementUnavailable(PlacementError):
    code = 'vgpu_nova_ext.placement.unavailable'


class GenerationConflict(PlacementError):
    code = 'vgpu_nova_ext.placement.generation_conflict'


class PlacementClient:
    """A thin client of the Placement API calls this project makes."""

    def __init__(self, connection: openstack.connection.Connection) -> None:
        self._connection = connection
        self._proxy = None
        self.requests = 0
        self.on_request: Callable[[str, str], None] | None = None
        """Called before each request with (method, url).

        The tests use it to stop Placement in the middle of a write.
        """

    @classmethod
    def from_session(cls, session: ks_session.Session,
                     retries: int = RETRIES) -> 'PlacementClient':
        return cls(openstack.connection.Connection(
            session=session, app_name='vgpu-nova-ext',
            connect_retries=retries, status_code_retries=retries))

    @classmethod
    def from_conf(cls, conf, retries: int = RETRIES,
                  timeout: float | None = None) -> 'PlacementClient':
        """A client as ``[placement]`` of the parsed ``conf`` says.

        :param timeout: seconds per request, instead of [placement]'s.
        """
        return cls.from_session(placement_conf.load_session(
            conf, timeout=timeout), retries)

    @classmethod
    def for_endpoint(cls, endpoint: str, token: str = 'admin',
                     retries: int = RETRIES) -> 'PlacementClient':
        """A client of a Placement running ``auth_strategy = noauth2``.

        noauth2 takes the roles from ``X-Roles``; the reshaper needs the
        ``service`` role, which nova-compute's service user has.
        """
        auth = ks_loading.get_plugin_loader('admin_token').load_from_options(
            endpoint=endpoint, token=token)
        session = ks_session.Session(
            auth=auth, additional_headers={'X-Roles': NOAUTH_ROLES})
        return cls.from_session(session, retries)

    @property
    def _api(self):
        # The SDK discovers Placement's versions when the proxy is first
        # made: do it inside call(), where connection errors are handled.
        if self._proxy is None:
            self._proxy = self._connection.placement
        return self._proxy

    @property
    def endpoint(self) -> str:
        try:
            return self._connection.session.get_endpoint(
                service_type='placement') or '(unknown endpoint)'
        except ks_exc.ClientException:
            return '(unknown endpoint)'

    # -- transport ---------------------------------------------------------
    def call(self, method: str, url: str, body: dict | None = None,
             ok: tuple[int, ...] = (200,), microversion: str = MICROVERSION
             ) -> dict | None:
        if self.on_request is not None:
            self.on_request(method, url)
        self.requests += 1
        try:
            response = self._api.request(
                url, method, json=body, microversion=microversion,
                raise_exc=False)
        except (ks_exc.ConnectFailure, ks_exc.ConnectTimeout,
                ks_exc.DiscoveryFailure, ks_exc.UnknownConnectionError) as exc:
            raise PlacementUnavailable(
                'Placement at %s is unreachable after %d tries (%s); check '
                'that it runs and the [placement] options' % (
                    self.endpoint, RETRIES + 1, type(exc).__name__))
        except ks_exc.ClientException as exc:
            raise PlacementUnavailable(
                'cannot reach Placement: %s; check the [placement] options'
                % type(exc).__name__)
        if response.status_code in ok:
            if response.status_code == 204 or not response.content:
                return None
            return response.json()
        detail, code = self._error(response)
        message = 'Placement answered %s %s with %d: %s' % (
            method, url.split('?')[0], response.status_code, detail)
        if response.status_code >= 500:
            raise PlacementUnavailable(message, response.status_code, code)
        if (response.status_code == 409
                and code == 'placement.concurrent_update'):
            raise GenerationConflict(message, 409, code)
        raise PlacementError(message, response.status_code, code)

    @staticmethod
    def _error(response) -> tuple[str, str | None]:
        try:
            error = response.json()['errors'][0]
            return (error.get('detail') or error.get('title', '')).strip(), \
                error.get('code')
        except (ValueError, KeyError, IndexError, TypeError):
            return response.text[:200].strip(), None

    # -- reads -------------------------------------------------------------
    def provider_by_name(self, name: str) -> dict | None:
        found = self.call('GET', '/resource_providers?name=%s' % name)
        providers = found['resource_providers']
        return providers[0] if providers else None

    def providers_in_tree(self, root_uuid: str) -> list[dict]:
        return self.call('GET', '/resource_providers?in_tree=%s' %
                         root_uuid)['resource_providers']

    def inventories(self, uuid: str) -> dict:
        """``{"resource_provider_generation", "inventories"}``."""
        return self.call('GET', '/resource_providers/%s/inventories' % uuid)

    def traits(self, uuid: str) -> dict:
        """``{"resource_provider_generation", "traits"}``."""
        return self.call('GET', '/resource_providers/%s/traits' % uuid)

    def provider_allocations(self, uuid: str) -> dict:
        """``{consumer: {"resources": {rc: n}}}`` on one provider."""
        return self.call('GET', '/resource_providers/%s/allocations' %
                         uuid)['allocations']

    def usages(self, uuid: str) -> dict:
        """``{resource class: amount used}`` of one provider."""
        return self.call('GET', '/resource_providers/%s/usages' %
                         uuid)['usages']

    def allocations(self, consumer: str) -> dict:
        return self.call('GET', '/allocations/%s' % consumer)

    def allocation_candidates(self, query: str) -> dict:
        return self.call('GET', '/allocation_candidates?%s' % query)

    # -- writes ------------------------------------------------------------
    def create_provider(self, name: str, uuid: str | None = None,
                        parent_uuid: str | None = None) -> dict:
        body = {'name': name}
        if uuid:
            body['uuid'] = uuid
        if parent_uuid:
            body['parent_provider_uuid'] = parent_uuid
        return self.call('POST', '/resource_providers', body)

    def ensure_trait(self, name: str) -> None:
        self.call('PUT', '/traits/%s' % name, ok=(201, 204))

    def ensure_resource_class(self, name: str) -> None:
        self.call('PUT', '/resource_classes/%s' % name, ok=(201, 204))

    def set_traits(self, uuid: str, generation: int,
                   traits: list[str]) -> dict:
        return self.call('PUT', '/resource_providers/%s/traits' % uuid, {
            'resource_provider_generation': generation,
            'traits': sorted(traits)})

    def set_inventories(self, uuid: str, generation: int,
                        inventories: dict) -> dict:
        return self.call('PUT', '/resource_providers/%s/inventories' % uuid, {
            'resource_provider_generation': generation,
            'inventories': inventories})

    def reshape(self, inventories: dict, allocations: dict) -> None:
        """``POST /reshaper``: inventories and allocations in one go.

        Many providers' inventories and the allocations that move between
        them change in one transaction.
        """
        self.call('POST', '/reshaper', {'inventories': inventories,
                                        'allocations': allocations},
                  ok=(204,))

    def put_allocations(self, consumer: str, body: dict) -> None:
        self.call('PUT', '/allocations/%s' % consumer, body, ok=(204,))

    def delete_provider(self, uuid: str) -> None:
        self.call('DELETE', '/resource_providers/%s' % uuid, ok=(204,))
