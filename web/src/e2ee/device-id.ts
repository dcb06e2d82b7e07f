// The device id this browser signs in on, one per member: the e2ee keys in this browser
// (IndexedDB, under the member's passphrase) belong to that device, so signing in again must
// land on the same device to read what was sent to it. Pass it as `device_id` to
// POST /api/v1/sessions. The id is not a secret (the server and the member's contacts see it);
// it is the only thing kept in localStorage, and no key, token or message text ever is.

const PREFIX = "keyhold.device.";

function fresh(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return "WEB" + Array.from(bytes, (b) => "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"[b % 32]).join("");
}

/** This browser's device id for `username` (made and remembered on first use). */
export function browserDeviceId(username: string): string {
  const key = PREFIX + username.toLowerCase();
  try {
    const known = window.localStorage.getItem(key);
    if (known && /^[A-Za-z0-9_.=-]{1,64}$/.test(known)) return known;
    const id = fresh();
    window.localStorage.setItem(key, id);
    return id;
  } catch {
    // Storage refused (a private window, say): a device of this sign-in only.
    return fresh();
  }
}

/** Forget it (after this device was removed, so that the next sign-in makes a new one). */
export function forgetBrowserDeviceId(username: string): void {
  try {
    window.localStorage.removeItem(PREFIX + username.toLowerCase());
  } catch {
    // nothing kept
  }
}
