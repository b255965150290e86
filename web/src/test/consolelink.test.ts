// The trader app's header offers the operator console (/admin) to an admin's session only.
import { createElement } from "react";
import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import { TopBar } from "../components/StatusBar";
import { initialState, reducer, type State } from "../store";

const session = { token: "t".repeat(43), address: "0x1563915e194D8CfBA1943570603F7606A3115508" as const, sessionKey: "0x01" as const, expiresAt: 9e12 };
const signedIn: State = reducer(initialState, { type: "signedIn", session });

function header(state: State, consoleLink = true): string {
  return renderToStaticMarkup(createElement(TopBar, { state, onSignOut: () => undefined, consoleLink }));
}

describe("the Console link in the trader app's header", () => {
  it("is shown once GET /api/v1/me says the session is an admin's, and links to /admin", () => {
    const s = reducer(signedIn, { type: "me", balance: "100", isAdmin: true, balanceEvents: 0, at: 0 });
    expect(s.balance).toBe("100");
    expect(header(s)).toMatch(/<a [^>]*href="\/admin"[^>]*>Console<\/a>/);
  });
  it("is never shown to a trader, before /me answers, or when signed out", () => {
    expect(header(signedIn)).not.toContain("/admin"); // /me has not answered yet
    expect(header(reducer(signedIn, { type: "me", balance: "100", isAdmin: false, balanceEvents: 0, at: 0 }))).not.toContain("/admin");
    expect(header(initialState)).not.toContain("/admin");
    expect(reducer(initialState, { type: "me", balance: "1", isAdmin: true, balanceEvents: 0, at: 0 }).isAdmin).toBe(false); // a late answer
  });
  it("goes away on signing out, and a new sign-in starts without it", () => {
    const admin = reducer(signedIn, { type: "me", balance: "100", isAdmin: true, balanceEvents: 0, at: 0 });
    const out = reducer(admin, { type: "signedOut", reason: null });
    expect(out.isAdmin).toBe(false);
    expect(header(out)).not.toContain("/admin");
    expect(reducer(admin, { type: "signedIn", session }).isAdmin).toBe(false);
  });
  it("is not offered inside the console itself", () => {
    const admin = reducer(signedIn, { type: "me", balance: "100", isAdmin: true, balanceEvents: 0, at: 0 });
    expect(header(admin, false)).not.toContain("/admin");
  });
});
