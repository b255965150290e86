// What gets signed: the EIP-4361 sign-in message (SPEC §5) and the bet text (SPEC §6).
import { getAddress } from "viem";
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from "viem/accounts";
import { createSiweMessage } from "viem/siwe";
import type { BetRequest, Hex } from "./wire";

export const SESSION_KEY_URN = "urn:tap-trading:session-key:";
export const SIGN_IN_STATEMENT = "Sign in to Tap Trading.";

export interface SiweInput {
  domain: string;
  /** "https:" or "http:" (the page's protocol; the server accepts http only in dev mode). */
  protocol: string;
  address: Hex;
  chainId: number;
  nonce: string;
  sessionKey: Hex;
  issuedAt: Date;
  expirationTime?: Date;
}

/**
 * The sign-in message, built by viem and laid out as the server's strict parser wants it
 * (app/auth/siwe.py): LF only, fields in EIP order, EIP-55 address, session key as a resource.
 */
export function buildSiweMessage(i: SiweInput): string {
  return createSiweMessage({
    domain: i.domain,
    address: getAddress(i.address),
    statement: SIGN_IN_STATEMENT,
    uri: `${i.protocol === "http:" ? "http" : "https"}://${i.domain}`,
    version: "1",
    chainId: i.chainId,
    nonce: i.nonce,
    issuedAt: i.issuedAt,
    ...(i.expirationTime ? { expirationTime: i.expirationTime } : {}),
    resources: [`${SESSION_KEY_URN}${getAddress(i.sessionKey)}`],
  });
}

export interface BetTextInput {
  domain: string;
  chainId: number;
  address: string;
  cell: string;
  stake: string;
  min_multiplier: string;
  nonce: string;
  ts: number;
}

/** SPEC §6: lines joined by LF, no trailing newline, values exactly as sent, address lowercase. */
export function betSigningText(b: BetTextInput): string {
  return [
    "tap-trading:bet",
    `domain:${b.domain}`,
    `chain-id:${b.chainId}`,
    `address:${b.address.toLowerCase()}`,
    `cell:${b.cell}`,
    `stake:${b.stake}`,
    `min-multiplier:${b.min_multiplier}`,
    `nonce:${b.nonce}`,
    `ts:${b.ts}`,
  ].join("\n");
}

const NONCE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** A random 16-character nonce (SPEC §6: 8–64 of [A-Za-z0-9_-]). */
export function randomNonce(length = 16): string {
  const bytes = new Uint8Array(length);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => NONCE_ALPHABET[b % NONCE_ALPHABET.length]).join("");
}

export interface SessionKey {
  privateKey: Hex;
  account: PrivateKeyAccount;
}

export function newSessionKey(): SessionKey {
  const privateKey = generatePrivateKey();
  return { privateKey, account: privateKeyToAccount(privateKey) };
}

export function sessionKeyFrom(privateKey: Hex): SessionKey {
  return { privateKey, account: privateKeyToAccount(privateKey) };
}

/** Sign one bet with the session key: EIP-191 personal_sign, no wallet popup. */
export async function signBet(
  key: SessionKey,
  ctx: { domain: string; chainId: number; address: string },
  fields: Omit<BetRequest, "signature">,
): Promise<BetRequest> {
  const text = betSigningText({ ...ctx, ...fields });
  const signature = await key.account.signMessage({ message: text });
  return { ...fields, signature };
}
