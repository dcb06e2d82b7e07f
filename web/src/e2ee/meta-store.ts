// A small key-value store in IndexedDB for what the e2ee device keeps beside the OlmMachine's
// own (passphrase-encrypted) store: the key log as this device saw it (pinned service key,
// newest head, a proven fork), what it remembers of contacts' keys (trust on first use), and
// the stream's e2ee events that came before the device was unlocked. None of it is secret:
// public keys, signed heads, Olm ciphertext and verification steps the server saw too.
// Nothing goes to localStorage.

const DB_NAME = "keyhold-e2ee-meta";
const STORE = "kv";

let opened: Promise<IDBDatabase> | null = null;

function open(): Promise<IDBDatabase> {
  if (!opened) {
    opened = new Promise((resolve, reject) => {
      const request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = () => {
        if (!request.result.objectStoreNames.contains(STORE)) request.result.createObjectStore(STORE);
      };
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => {
        opened = null;
        reject(request.error ?? new Error("IndexedDB is unavailable"));
      };
    });
  }
  return opened;
}

function run<T>(mode: IDBTransactionMode, act: (store: IDBObjectStore) => IDBRequest | void): Promise<T> {
  return open().then(
    (db) =>
      new Promise<T>((resolve, reject) => {
        const tx = db.transaction(STORE, mode);
        const request = act(tx.objectStore(STORE));
        tx.oncomplete = () => resolve((request ? request.result : undefined) as T);
        tx.onerror = () => reject(tx.error ?? new Error("IndexedDB transaction failed"));
        tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
      }),
  );
}

export function metaGet<T>(key: string): Promise<T | undefined> {
  return run<T | undefined>("readonly", (store) => store.get(key));
}

export function metaSet(key: string, value: unknown): Promise<void> {
  return run<void>("readwrite", (store) => {
    store.put(value, key);
  });
}

export function metaDelete(key: string): Promise<void> {
  return run<void>("readwrite", (store) => {
    store.delete(key);
  });
}

/** Deletes every key that starts with `prefix` (a member's, at account deletion). */
export function metaDeletePrefix(prefix: string): Promise<void> {
  return run<void>("readwrite", (store) => {
    const cursor = store.openCursor();
    cursor.onsuccess = () => {
      const at = cursor.result;
      if (!at) return;
      if (typeof at.key === "string" && at.key.startsWith(prefix)) at.delete();
      at.continue();
    };
  });
}
