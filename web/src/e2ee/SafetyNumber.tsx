// Safety numbers: the 60 digits (and QR code) the member and a contact compare, in person or
// on a call, to check that each sees the other's real master key. Also where a contact's
// identity change is shown and accepted.

import qrcode from "qrcode-generator";
import { useMemo, useState } from "preact/hooks";
import "./e2ee.css";
import { useDeviceValue, useE2eeDevice } from "./hooks";

export interface SafetyNumberProps {
  /** The contact's username. */
  username: string;
  headingLevel?: 2 | 3 | 4;
}

function binary(bytes: Uint8Array): string {
  let out = "";
  for (const byte of bytes) out += String.fromCharCode(byte);
  return out;
}

/** A QR code as SVG nodes (no data URL, no inline style): one path of the dark modules. */
export function QrCode({ payload, label }: { payload: Uint8Array; label: string }) {
  const { size, path } = useMemo(() => {
    const qr = qrcode(0, "M");
    qr.addData(binary(payload), "Byte");
    qr.make();
    const count = qr.getModuleCount();
    let d = "";
    for (let row = 0; row < count; row++) {
      for (let col = 0; col < count; col++) if (qr.isDark(row, col)) d += `M${col + 4} ${row + 4}h1v1h-1z`;
    }
    return { size: count + 8, path: d };
  }, [payload]);
  return (
    <svg class="e2ee-qr" viewBox={`0 0 ${size} ${size}`} role="img" aria-label={label} shape-rendering="crispEdges" data-testid="e2ee-qr">
      <rect width={size} height={size} fill="#ffffff" />
      <path d={path} fill="#000000" />
    </svg>
  );
}

export function SafetyNumber({ username, headingLevel = 3 }: SafetyNumberProps) {
  const device = useE2eeDevice();
  const number = useDeviceValue(device, (d) => d.safetyNumber(username), [username]);
  const contact = useDeviceValue(device, (d) => d.contact(username), [username]);
  const [theirs, setTheirs] = useState("");
  const [accepting, setAccepting] = useState(false);
  const [acceptError, setAcceptError] = useState<string | null>(null);
  const Heading = `h${headingLevel}` as "h3";
  const headingId = `e2ee-safety-${username}`;
  if (!device) {
    return (
      <section class="e2ee-panel" aria-label={`Safety number with ${username}`}>
        <p class="e2ee-muted">Unlock end-to-end encryption in this browser to see your safety number with {username}.</p>
      </section>
    );
  }
  const typed = theirs.replace(/\D/g, "");
  const compared = typed.length === 60 && number.value ? typed === number.value.digits : null;
  const changes = contact.value?.changes ?? [];
  return (
    <section class="e2ee-panel" aria-labelledby={headingId} data-testid="e2ee-safety-number">
      <Heading id={headingId}>Safety number with {username}</Heading>
      {contact.value && (
        <p data-testid="e2ee-verified-status">
          {contact.value.verified ? (
            <span class="e2ee-ok">✓ You verified {username}.</span>
          ) : (
            <span class="e2ee-muted">You have not verified {username} on this device.</span>
          )}
        </p>
      )}
      {changes.length > 0 && (
        <div role="alert" data-testid="e2ee-identity-change">
          <p class="e2ee-warn">⚠ {username}'s keys changed: {changes.map((c) => c.text).join("; ")}.</p>
          <p>
            A new phone does this, and so would a key slipped in by the server. Sending to {username} stops until you accept
            the change. Compare the new safety number with them (or verify their device) first.
          </p>
          {acceptError && <p class="e2ee-error">{acceptError}</p>}
          <div class="e2ee-actions">
            <button
              type="button"
              disabled={accepting}
              onClick={async () => {
                setAccepting(true);
                setAcceptError(null);
                try {
                  const done = await device.acceptIdentity(username, changes);
                  if (!done) setAcceptError("The keys changed again meanwhile: check them once more.");
                  contact.reload();
                  number.reload();
                } catch (error) {
                  setAcceptError(error instanceof Error ? error.message : String(error));
                } finally {
                  setAccepting(false);
                }
              }}
            >
              Accept {username}'s new keys
            </button>
          </div>
        </div>
      )}
      {number.loading && !number.value && <p role="status">Computing the safety number…</p>}
      {number.error && (
        <p class="e2ee-error" role="alert">
          {number.error}
        </p>
      )}
      {number.value && (
        <>
          <p>Compare these 60 digits with the ones on {username}'s screen, or let them scan the code.</p>
          <div class="e2ee-digits" aria-label="safety number" data-testid="e2ee-digits" data-digits={number.value.digits}>
            {number.value.groups.map((group, i) => (
              <span key={i}>{group}</span>
            ))}
          </div>
          <QrCode payload={number.value.qrPayload} label={`QR code of your safety number with ${username}`} />
          <form class="e2ee-form" onSubmit={(e) => e.preventDefault()}>
            <label>
              Their digits (optional, to compare)
              <input
                inputMode="numeric"
                autocomplete="off"
                value={theirs}
                onInput={(e) => setTheirs((e.target as HTMLInputElement).value)}
                name="e2ee-their-digits"
              />
            </label>
          </form>
          {compared === true && <p class="e2ee-ok" role="status">✓ The numbers match.</p>}
          {compared === false && (
            <p class="e2ee-error" role="alert">
              ✗ The numbers differ: one of you is not seeing the other's real key.
            </p>
          )}
        </>
      )}
    </section>
  );
}

export default SafetyNumber;
