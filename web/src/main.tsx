// Entry: picks the area by path. Each area is its own chunk, so a member never downloads the
// staff console and the wasm crypto core loads only with the first e2ee conversation.
import { render } from "preact";
import { lazy, Suspense } from "preact/compat";
import "./styles.css";

const MemberApp = lazy(() => import("./member/MemberApp"));
const StaffApp = lazy(() => import("./staff/StaffApp"));
const TransparencyPage = lazy(() => import("./public/TransparencyPage"));

function Area() {
  const path = window.location.pathname;
  if (path === "/staff" || path.startsWith("/staff/")) return <StaffApp />;
  if (path === "/transparency") return <TransparencyPage />;
  return <MemberApp />;
}

render(
  <Suspense fallback={<p class="loading">Loading…</p>}>
    <Area />
  </Suspense>,
  document.getElementById("app")!,
);
