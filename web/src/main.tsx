import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./components/App";
import { Controller } from "./controller";
import "./perf";
import "./styles.css";

const ctl = new Controller();
void ctl.start();
const root = document.getElementById("root");
if (root)
  createRoot(root).render(
    <StrictMode>
      <App ctl={ctl} />
    </StrictMode>,
  );
