// Hooks the e2ee components share: the running device (null until the member unlocked it), and
// a value recomputed whenever the device says something changed.

import { useEffect, useState } from "preact/hooks";
import type { E2eeDevice } from "./machine";
import { currentDevice, e2eeStatus } from "./runtime";

export function useE2eeDevice(): E2eeDevice | null {
  const [device, setDevice] = useState<E2eeDevice | null>(currentDevice());
  useEffect(() => e2eeStatus.subscribe(() => setDevice(currentDevice())), []);
  return device;
}

export interface Loaded<T> {
  value: T | null;
  error: string | null;
  loading: boolean;
  reload(): void;
}

/** `load(device)` now, again when the device reports a change (debounced), and on `reload()`. */
export function useDeviceValue<T>(device: E2eeDevice | null, load: (device: E2eeDevice) => Promise<T>, deps: unknown[]): Loaded<T> {
  const [value, setValue] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    if (!device) return undefined;
    let timer = 0;
    const unsubscribe = device.subscribe(() => {
      window.clearTimeout(timer);
      timer = window.setTimeout(() => setTick((t) => t + 1), 400);
    });
    return () => {
      window.clearTimeout(timer);
      unsubscribe();
    };
  }, [device]);
  useEffect(() => {
    if (!device) return undefined;
    let live = true;
    setLoading(true);
    load(device).then(
      (result) => {
        if (!live) return;
        setValue(result);
        setError(null);
        setLoading(false);
      },
      (failure: unknown) => {
        if (!live) return;
        setError(failure instanceof Error ? failure.message : String(failure));
        setLoading(false);
      },
    );
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [device, tick, ...deps]);
  return { value, error, loading, reload: () => setTick((t) => t + 1) };
}

/** An Ed25519 key in groups of 4 characters, easier to read aloud. */
export function fingerprint(key: string | null): string {
  if (!key) return "—";
  return key.replace(/(.{4})/g, "$1 ").trim();
}
