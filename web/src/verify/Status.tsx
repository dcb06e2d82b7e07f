// ✓ or ✗ with what failed, in words (never colour alone).
import type { Check } from "./sth";
import "./verify.css";

export function Status({ check, okText = "Verified", pending }: { check: Check | null; okText?: string; pending?: string }) {
  if (!check) return <span class="vf-status vf-pending">{pending ?? "Checking…"}</span>;
  if (check.ok) {
    return (
      <span class="vf-status vf-ok">
        <span aria-hidden="true">✓ </span>
        {okText}
      </span>
    );
  }
  return (
    <span class="vf-status vf-bad">
      <span aria-hidden="true">✗ </span>
      <span class="vf-sr">Does not verify: </span>
      {check.reason}
    </span>
  );
}
