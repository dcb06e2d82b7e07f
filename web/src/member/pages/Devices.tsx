// My devices: name, first sign-in, last seen, rename, remove (with my password).
import { useEffect, useState } from "preact/hooks";
import { api } from "../../api";
import { forgetBrowserDeviceId } from "../../e2ee/device-id";
import { memberSession } from "../../session";
import { Button, ErrorText, StatusText } from "../../ui/components";
import { formatDateTime } from "../../ui/format";
import { useMember, usePage } from "../context";
import { navigate } from "../router";
import type { MemberState } from "../state";
import type { Device } from "../types";
import { logOut } from "./Settings";

export function Devices() {
  const heading = usePage("Devices");
  const state = useMember();
  const token = state.session.token;
  const [devices, setDevices] = useState<Device[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [status, setStatus] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const load = () =>
    api<{ devices: Device[] }>("GET", "/devices", { token })
      .then((d) => {
        setDevices(d.devices);
        setError(null);
      })
      .catch(setError);
  useEffect(() => {
    void load();
  }, [token]);
  return (
    <div>
      <h1 ref={heading} tabIndex={-1}>
        Devices
      </h1>
      <p class="help">
        Each sign-in is a device. Removing one ends its session and closes its connections at once. A device you do not
        recognise? Remove it and change your password.
      </p>
      <ErrorText error={error} />
      {status && <StatusText>{status}</StatusText>}
      {!devices && !error && <p class="muted">Loading devices…</p>}
      {devices && devices.length === 0 && <p class="muted">No devices listed.</p>}
      {devices && (
        <ul class="device-cards">
          {devices.map((device) => (
            <DeviceItem
              key={device.device_id}
              device={device}
              state={state}
              onChanged={(text) => {
                setStatus(text);
                void load();
              }}
            />
          ))}
        </ul>
      )}
      <section class="card" aria-labelledby="everywhere-h">
        <h2 id="everywhere-h">Every device</h2>
        <Button
          class="danger"
          busy={busy}
          onClick={async () => {
            setBusy(true);
            try {
              await logOut(state, true);
            } catch (err) {
              setError(err);
              setBusy(false);
            }
          }}
        >
          Log out everywhere
        </Button>
      </section>
    </div>
  );
}

function DeviceItem({ device, state, onChanged }: { device: Device; state: MemberState; onChanged: (text: string) => void }) {
  const [name, setName] = useState(device.display_name ?? "");
  const [renaming, setRenaming] = useState(false);
  const [removing, setRemoving] = useState(false);
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const token = state.session.token;
  const label = device.display_name || device.device_id;
  const base = `device-${device.device_id}`;
  return (
    <li class="card device">
      <h2 class="device-name">
        {label}
        {device.current && <span class="tag">this browser</span>}
      </h2>
      <dl class="facts">
        <dt>Device id</dt>
        <dd>
          <code>{device.device_id}</code>
        </dd>
        <dt>First signed in</dt>
        <dd>{formatDateTime(device.created_at)}</dd>
        <dt>Last seen</dt>
        <dd>{device.last_seen_at ? formatDateTime(device.last_seen_at) : "never"}</dd>
      </dl>
      <div class="row">
        <Button class="small" aria-expanded={renaming ? "true" : "false"} onClick={() => setRenaming(!renaming)}>
          Rename<span class="sr-only"> {label}</span>
        </Button>
        <Button class="small danger" aria-expanded={removing ? "true" : "false"} onClick={() => setRemoving(!removing)}>
          Remove<span class="sr-only"> {label}</span>
        </Button>
      </div>
      {renaming && (
        <form
          class="inline-form"
          onSubmit={async (e) => {
            e.preventDefault();
            setBusy(true);
            setError(null);
            try {
              await api("PATCH", `/devices/${encodeURIComponent(device.device_id)}`, { token, body: { display_name: name.trim() } });
              setRenaming(false);
              onChanged("Device renamed.");
            } catch (err) {
              setError(err);
            } finally {
              setBusy(false);
            }
          }}
        >
          <label for={`${base}-name`}>New name</label>
          <input id={`${base}-name`} value={name} maxLength={100} required onInput={(e) => setName(e.currentTarget.value)} />
          <Button type="submit" busy={busy}>
            Save
          </Button>
        </form>
      )}
      {removing && (
        <form
          class="inline-form"
          onSubmit={async (e) => {
            e.preventDefault();
            setBusy(true);
            setError(null);
            try {
              await api("DELETE", `/devices/${encodeURIComponent(device.device_id)}`, { token, body: { password } });
              if (device.current) {
                forgetBrowserDeviceId(state.username);
                state.stop();
                memberSession.set(null);
                navigate("/", { replace: true });
                return;
              }
              setRemoving(false);
              onChanged(`Removed ${label}: its session has ended.`);
            } catch (err) {
              setError(err);
            } finally {
              setBusy(false);
            }
          }}
        >
          <label for={`${base}-password`}>Your password{device.current ? " (this logs you out here)" : ""}</label>
          <input
            id={`${base}-password`}
            type="password"
            autocomplete="current-password"
            required
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
          <Button type="submit" class="danger" busy={busy}>
            Remove device
          </Button>
        </form>
      )}
      <ErrorText error={error} />
    </li>
  );
}
