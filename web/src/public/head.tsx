// The access log's current signed tree head, fetched and its Ed25519 signature checked in this
// browser against the service's published key.
import { useCallback, useEffect, useState } from "preact/hooks";
import { Status } from "../verify/Status";
import { type Check, checkTreeHead, fetchHead, fetchServiceKey, type TreeHeadJson } from "../verify/sth";
import { errorText, timeWords } from "../verify/words";

export interface VerifiedHead {
  head: TreeHeadJson | null;
  key: string | null;
  check: Check | null;
  error: string | null;
  reload: () => Promise<void>;
}

export function useVerifiedHead(): VerifiedHead {
  const [state, setState] = useState<Omit<VerifiedHead, "reload">>({ head: null, key: null, check: null, error: null });
  const reload = useCallback(async () => {
    setState((s) => ({ ...s, check: null, error: null }));
    try {
      const [head, key] = await Promise.all([fetchHead(), fetchServiceKey()]);
      const check = await checkTreeHead(head, key);
      setState({ head, key, check, error: null });
    } catch (e) {
      setState({ head: null, key: null, check: null, error: errorText(e) });
    }
  }, []);
  useEffect(() => {
    void reload();
  }, [reload]);
  return { ...state, reload };
}

export function HeadCard({ verified, headingLevel = 2 }: { verified: VerifiedHead; headingLevel?: 2 | 3 }) {
  const { head, key, check, error } = verified;
  const Heading = headingLevel === 2 ? "h2" : "h3";
  return (
    <section class="tp-head" aria-labelledby="tp-head-title">
      <Heading id="tp-head-title">Current signed tree head</Heading>
      <p class="tp-muted">
        The access log is a Merkle tree; the service signs its size and root. Anyone can keep a head and later check
        that the log only grew.
      </p>
      {error && (
        <p class="tp-error" role="alert">
          Could not fetch the signed tree head: {error}
        </p>
      )}
      {!error && !head && <p class="tp-muted">Fetching…</p>}
      {head && (
        <>
          <dl class="tp-facts">
            <dt>Entries</dt>
            <dd data-testid="sth-size">{head.size}</dd>
            <dt>Root</dt>
            <dd>
              <code class="tp-hash">{head.root ?? "— (empty log)"}</code>
            </dd>
            <dt>Signed</dt>
            <dd>{head.timestamp_ms ? timeWords(head.timestamp_ms) : "—"}</dd>
            <dt>Service key (Ed25519)</dt>
            <dd>
              <code class="tp-hash">{key}</code>
            </dd>
          </dl>
          <p class="tp-verdict" aria-live="polite">
            {head.size === 0 && !head.root ? (
              "Nothing has been logged yet, so there is no signed head to check."
            ) : (
              <Status check={check} okText="Signature verifies with the service key" />
            )}
          </p>
          <p class="tp-muted tp-small">
            The key comes from <code>/api/v1/transparency/key</code> on this server: compare it with one you obtained
            elsewhere to be sure it is Keyhold's.
          </p>
        </>
      )}
    </section>
  );
}
