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
"""Waits for Nova's API that hold on a busy machine.

Nova's functional helpers poll every 0.5 s and give up after 5 s (10
tries). A test that walks a server through many operations waits dozens
of times, and on a loaded CI machine (both concurrency modes, two test
workers on two cores) a step can take longer than 5 s. These poll more
often and give up after :attr:`PatientWaits.PATIENCE` seconds, naming what
they waited for and what they last saw.
"""

import time


class PatientWaits:
    """Mixed in before Nova's test base, overriding its waits."""

    POLL = 0.1
    PATIENCE = 120.0

    def _poll(self, read, done, what):
        deadline = time.monotonic() + self.PATIENCE
        while True:
            found = read()
            if done(found):
                return found
            if time.monotonic() > deadline:
                self.fail('%s: gave up after %.0f s; last seen: %s' % (
                    what, self.PATIENCE, found))
            time.sleep(self.POLL)

    def _wait_for_server_parameter(self, server, expected_params,
                                   max_retries=None, api=None,
                                   wait_for_fault_key=True):
        api = api or getattr(self, 'admin_api', self.api)
        want_fault = wait_for_fault_key and \
            expected_params.get('status') == 'ERROR'
        return self._poll(
            lambda: api.get_server(server['id']),
            lambda found: all(found[k] == v for k, v in
                              expected_params.items()) and
            (not want_fault or 'fault' in found),
            'server %s to reach %s' % (server['id'], expected_params))

    def _wait_for_migration_status(self, server, expected_statuses):
        api = getattr(self, 'admin_api', self.api)
        statuses = {s.lower() for s in expected_statuses}

        def read():
            return [m for m in api.api_get('/os-migrations').body[
                'migrations'] if m['instance_uuid'] == server['id'] and
                m['status'].lower() in statuses]
        return self._poll(read, bool, 'a migration of %s in %s' % (
            server['id'], sorted(statuses)))[0]

    def _wait_for_instance_action_event(self, server, action_name,
                                        event_name, event_result):
        api = getattr(self, 'admin_api', self.api)

        def read():
            for action in api.get_instance_actions(server['id']):
                if action['action'] != action_name:
                    continue
                for event in api.get_instance_action_details(
                        server['id'], action['request_id'])['events']:
                    if event['event'] == event_name and (
                            event['result'] or '').lower() == \
                            event_result.lower():
                        return event
            return None
        return self._poll(read, bool, 'event %s %s of %s' % (
            event_name, event_result, server['id']))
