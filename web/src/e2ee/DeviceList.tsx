// "Who can read this": the devices that can read an e2ee conversation, as this browser's device
// sees them: each current member's devices whose keys passed the key-transparency log, with
// whether they are verified, and those whose keys failed (which are sent nothing).

import "./e2ee.css";
import type { ReaderDevice } from "./machine";
import { fingerprint, useDeviceValue, useE2eeDevice } from "./hooks";

export interface DeviceListProps {
  conversationId: number;
  /** Heading level of the list's title (default 3). */
  headingLevel?: 2 | 3 | 4;
}

function byMember(devices: ReaderDevice[]): [string, ReaderDevice[]][] {
  const groups = new Map<string, ReaderDevice[]>();
  for (const device of devices) {
    if (!groups.has(device.user)) groups.set(device.user, []);
    groups.get(device.user)!.push(device);
  }
  return [...groups.entries()];
}

export function DeviceList({ conversationId, headingLevel = 3 }: DeviceListProps) {
  const device = useE2eeDevice();
  const readers = useDeviceValue(device, (d) => d.readers(conversationId), [conversationId]);
  const Heading = `h${headingLevel}` as "h3";
  if (!device) {
    return (
      <section class="e2ee-panel" aria-label="Devices that can read this conversation">
        <p class="e2ee-muted">Unlock end-to-end encryption in this browser to see which devices can read this conversation.</p>
      </section>
    );
  }
  const list = readers.value ?? [];
  const reading = list.filter((d) => !d.logProblem);
  const failed = list.filter((d) => d.logProblem);
  return (
    <section class="e2ee-panel" aria-labelledby={`e2ee-readers-${conversationId}`} data-testid="e2ee-device-list">
      <Heading id={`e2ee-readers-${conversationId}`}>Devices that can read this conversation</Heading>
      {readers.error && (
        <p class="e2ee-error" role="alert">
          {readers.error}
        </p>
      )}
      {readers.loading && !readers.value && <p role="status">Checking the members' keys…</p>}
      {readers.value && (
        <p>
          {reading.length === 1 ? "1 device" : `${reading.length} devices`} of {byMember(reading).length}{" "}
          {byMember(reading).length === 1 ? "member" : "members"} {reading.length === 1 ? "holds" : "hold"} the keys; Keyhold holds none. Each device's keys were
          checked against the key-transparency log when this browser fetched them, and are again before every send.
        </p>
      )}
      {byMember(list).map(([user, devices]) => (
        <div key={user}>
          <p>
            <strong>{user}</strong>
          </p>
          <ul class="e2ee-devices">
            {devices.map((d) => (
              <li key={d.deviceId} data-device={d.deviceId} data-testid="e2ee-reader">
                <span>
                  {d.name ? `${d.name} (${d.deviceId})` : d.deviceId}
                  {d.current ? " — this browser" : ""}{" "}
                  {d.logProblem ? (
                    <span class="e2ee-error">✗ key-transparency check failed: sent nothing</span>
                  ) : d.verified ? (
                    <span class="e2ee-ok">✓ verified</span>
                  ) : d.crossSigned ? (
                    <span class="e2ee-muted">signed by {user}'s identity, not verified by you</span>
                  ) : (
                    <span class="e2ee-warn">not signed by {user}'s identity</span>
                  )}
                </span>
                {d.logProblem ? (
                  <span class="e2ee-error">{d.logProblem}</span>
                ) : (
                  <span class="e2ee-fingerprint" aria-label={`key of ${d.deviceId}`}>
                    {fingerprint(d.ed25519)}
                  </span>
                )}
              </li>
            ))}
          </ul>
        </div>
      ))}
      {failed.length > 0 && (
        <p class="e2ee-error" role="alert" data-testid="e2ee-transparency-failure">
          Sending here is refused: {failed.length === 1 ? "a device's keys" : `${failed.length} devices' keys`} failed the
          key-transparency check. The server may be showing you a key that is not the member's.
        </p>
      )}
    </section>
  );
}

export default DeviceList;
