import { lazy, StrictMode, Suspense } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./components/App";
import { Controller } from "./controller";
import "./perf";
import "./styles.css";

const ctl = new Controller();
/** The operator console (SPEC §8c) lives at /admin in the same app; nginx serves index.html there. */
const isAdminPath = /^\/admin\/?$/.test(window.location.pathname);
/** Its own chunk, loaded only at /admin: the trader's bundle does not carry the console. */
const AdminApp = lazy(() => import("./components/admin/AdminApp").then((m) => ({ default: m.AdminApp })));
void ctl.start();
const root = document.getElementById("root");
if (root)
  createRoot(root).render(
    <StrictMode>
      {isAdminPath ? (
        <Suspense fallback={<p className="hint">Loading the operator console…</p>}>
          <AdminApp ctl={ctl} />
        </Suspense>
      ) : (
        <App ctl={ctl} />
      )}
    </StrictMode>,
  );
