// "Who can read this": on every conversation, the API's `readable_by` sentence as is, the
// model, and (on click or keyboard) what the service can and cannot see. For e2ee, the devices
// that can read it, from the E2EE codec (`ConversationCodec.devices`), or the `devices` prop.
import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import { Badge } from "../../ui/components";
import { problemText } from "../../ui/format";
import type { ConversationCodec, ReadingDevice } from "../codec";
import type { Conversation } from "../types";

export interface WhoCanReadProps {
  conversation: Conversation;
  codec: ConversationCodec | null;
  /** Why the e2ee codec could not be loaded (shown instead of the devices). */
  codecError?: string | null;
  /** E2EE slot: what to show as the devices that can read (overrides `codec.devices()`). */
  devices?: ComponentChildren;
}

export function WhoCanRead({ conversation, codec, codecError, devices }: WhoCanReadProps) {
  const [open, setOpen] = useState(false);
  const [devicesOpen, setDevicesOpen] = useState(false);
  const model = conversation.encryption;
  const explainId = `explain-${conversation.id}`;
  const devicesId = `readers-${conversation.id}`;
  return (
    <section class={`banner banner-${model}`} aria-label="Who can read this conversation">
      <p class="banner-line">
        <Badge model={model} /> <strong>Who can read this:</strong>{" "}
        <span class="readable-by" data-testid="readable-by">
          {conversation.readable_by}
        </span>
      </p>
      <p class="banner-toggles">
        {model === "e2ee" && (
          <button
            type="button"
            class="link-button"
            aria-expanded={devicesOpen ? "true" : "false"}
            aria-controls={devicesId}
            onClick={() => setDevicesOpen(!devicesOpen)}
          >
            {devicesOpen ? "Hide the devices" : "Which devices can read it"}
          </button>
        )}
        <button
          type="button"
          class="link-button"
          aria-expanded={open ? "true" : "false"}
          aria-controls={explainId}
          onClick={() => setOpen(!open)}
        >
          {open ? "Hide what Keyhold can see" : "What Keyhold can and cannot see"}
        </button>
      </p>
      {model === "e2ee" && (
        <div id={devicesId} class="banner-devices" hidden={!devicesOpen} tabIndex={devicesOpen ? 0 : -1} role="region" aria-label="Devices that can read it">
          {devicesOpen && (devices ?? <ReadingDevices codec={codec} codecError={codecError ?? null} />)}
        </div>
      )}
      <div id={explainId} class="explain" hidden={!open}>
        {model === "e2ee" ? <E2eeExplanation /> : <StandardExplanation />}
      </div>
    </section>
  );
}

function StandardExplanation() {
  return (
    <>
      <p>
        <strong>standard</strong>: your messages and files are sealed (AES-256-GCM) before they are stored, under a key
        for this conversation that is itself wrapped by a key of each member's region. Keyhold's server opens them to
        deliver them, show history, and scan text and files for safety (threats, abuse, known illegal images).
      </p>
      <p>
        <strong>Staff</strong> can read a message only under an approved report or legal case in one of the regions
        named above, and every such read is first written to a signed, public access log: you see reads of your data in
        your access history. There is no staff path to attachments' bytes.
      </p>
      <p>
        <strong>What the service sees anyway</strong>: who talks to whom and when, message sizes, file sizes, group
        titles (not sealed), receipts. Someone running the server with both its database and its key file could open
        everything.
      </p>
    </>
  );
}

function E2eeExplanation() {
  return (
    <>
      <p>
        <strong>e2ee</strong>: messages and files are encrypted on the participants' devices (Olm and Megolm, as in
        Matrix) before they leave; Keyhold stores and relays ciphertext and holds no key that opens it. Nothing is
        scanned, and no staff member can read it, even under a case.
      </p>
      <p>
        <strong>Reports</strong> reveal only what the reporter chooses to reveal, and franking proves the revealed message
        is the one that was sent.
      </p>
      <p>
        <strong>What the service sees anyway</strong>: who writes to whom, when and how much, file sizes, each member's
        devices and their public keys (published in a key-transparency log that devices check before encrypting).
      </p>
    </>
  );
}

function ReadingDevices({ codec, codecError }: { codec: ConversationCodec | null; codecError: string | null }) {
  const [devices, setDevices] = useState<ReadingDevice[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    setDevices(null);
    setError(null);
    if (!codec?.devices) return;
    let live = true;
    codec
      .devices()
      .then((list) => live && setDevices(list))
      .catch((err) => live && setError(problemText(err)));
    return () => {
      live = false;
    };
  }, [codec]);
  if (codecError) return <p class="muted">Devices that can read it: not shown ({codecError}).</p>;
  if (!codec) return <p class="muted">Loading end-to-end encryption…</p>;
  if (!codec.devices) return <p class="muted">This browser cannot list the devices that can read it yet.</p>;
  if (error) return <p class="error">Devices that can read it could not be listed: {error}</p>;
  if (!devices) return <p class="muted">Listing the devices that can read it…</p>;
  return (
    <div>
      <p>Devices that can read it:</p>
      <ul class="device-list">
        {devices.map((d) => (
          <li key={`${d.user}/${d.deviceId}`}>
            {d.user}: {d.name || d.deviceId} {d.verified ? "(verified)" : "(not verified)"}
            {d.note ? ` — ${d.note}` : ""}
          </li>
        ))}
      </ul>
    </div>
  );
}
