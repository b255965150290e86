import { privateKeyToAccount } from "viem/accounts";
import { describe, expect, it } from "vitest";
import { betSigningText, buildSiweMessage, randomNonce, sessionKeyFrom, signBet } from "../signing";
import type { Hex } from "../wire";
import vectors from "./vectors.json";

// vectors.json is written by web/tools/make_vectors.py with the server's own functions.
describe("signed texts match the Python side", () => {
  const v = vectors.bet;
  it("bet text (SPEC §6) is byte-identical to app/auth/signatures.py bet_signing_text", () => {
    expect(betSigningText({ domain: v.domain, chainId: v.chainId, address: v.address, cell: v.cell, stake: v.stake, min_multiplier: v.min_multiplier, nonce: v.nonce, ts: v.ts })).toBe(v.text);
  });
  it("the session key's signature equals eth-account's (RFC 6979: deterministic)", async () => {
    const key = sessionKeyFrom(v.sessionKey as Hex);
    const body = await signBet(key, { domain: v.domain, chainId: v.chainId, address: v.address }, { cell: v.cell, stake: v.stake, min_multiplier: v.min_multiplier, nonce: v.nonce, ts: v.ts });
    expect(body.signature).toBe(v.signature);
    expect(body).toMatchObject({ cell: v.cell, stake: v.stake, min_multiplier: v.min_multiplier, nonce: v.nonce, ts: v.ts });
  });
  it("the SIWE message is what the server's strict parser accepted", () => {
    const s = vectors.siwe;
    const text = buildSiweMessage({
      domain: s.domain,
      protocol: s.protocol,
      address: s.address.toLowerCase() as Hex, // checksummed by the builder
      chainId: s.chainId,
      nonce: s.nonce,
      sessionKey: privateKeyToAccount(vectors.bet.sessionKey as Hex).address,
      issuedAt: new Date(s.issuedAt),
      expirationTime: new Date(s.expirationTime),
    });
    expect(text).toBe(s.text);
    expect(text).not.toContain("\r");
    expect(text.endsWith("\n")).toBe(false);
  });
  it("nonces are 16 alphanumerics and do not repeat", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const n = randomNonce();
      expect(n).toMatch(/^[A-Za-z0-9]{16}$/);
      seen.add(n);
    }
    expect(seen.size).toBe(1000);
  });
});
