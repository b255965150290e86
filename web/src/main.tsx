import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./components/App";
import { AdminApp } from "./components/admin/AdminApp";
import { Controller } from "./controller";
import "./perf";
import "./styles.css";

const ctl = new Controller();
/** The operator console (SPEC §8c) lives at /admin in the same app; nginx serves index.html there. */
const isAdminPath = /^\/admin\/?$/.test(window.location.pathname);
void ctl.start();
const root = document.getElementById("root");
if (root)
  createRoot(root).render(
    <StrictMode>
      {isAdminPath ? <AdminApp ctl={ctl} /> : <App ctl={ctl} />}
    </StrictMode>,
  );
