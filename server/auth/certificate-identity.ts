/**
 * Certificate identities: the names a verified client certificate can be granted under, spelt
 * as in the tokens file: `CN=<subject common name>` and one per subject alternative name,
 * `DNS:host`, `IP:addr`, `URI:uri`, `email:addr`.
 *
 * Invariant: only the certificate's own fields are read; verifying it (chain to the client CA,
 * validity dates) is the TLS handshake's job, and a certificate grpc-js did not verify never
 * reaches this module (its auth context then has no certificate).
 */
import type { PeerCertificate } from "node:tls";

/** Node's spelling of a SAN type -> the tokens file's. */
const SAN_TYPES: Record<string, string> = {
  DNS: "DNS",
  "IP Address": "IP",
  URI: "URI",
  email: "email",
};

/**
 * Splits Node's `subjectaltname` text (`DNS:a, IP Address:127.0.0.1, URI:"x,y"`) into
 * [type, value] pairs. Node quotes a value holding a comma or a quote as a JSON string, so a
 * value can never be mistaken for the start of another entry.
 */
export function parseSubjectAltNames(text: string): [string, string][] {
  const out: [string, string][] = [];
  let i = 0;
  while (i < text.length) {
    const colon = text.indexOf(":", i);
    if (colon === -1) break;
    const type = text.slice(i, colon);
    let value: string;
    let next: number;
    if (text[colon + 1] === '"') {
      // A JSON string: find its closing quote, skipping escaped characters.
      let j = colon + 2;
      while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      try {
        value = JSON.parse(text.slice(colon + 1, j + 1)) as string;
      } catch {
        break;
      }
      next = j + 1;
    } else {
      const comma = text.indexOf(", ", colon + 1);
      next = comma === -1 ? text.length : comma;
      value = text.slice(colon + 1, next);
    }
    out.push([type, value]);
    i = text.startsWith(", ", next) ? next + 2 : next + 1;
  }
  return out;
}

/** The identities of a verified certificate, in the tokens file's spelling. */
export function certificateIdentities(cert: PeerCertificate): string[] {
  const out: string[] = [];
  const cn: unknown = cert.subject?.CN;
  for (const name of Array.isArray(cn) ? cn : [cn]) {
    if (typeof name === "string" && name !== "") out.push(`CN=${name}`);
  }
  if (typeof cert.subjectaltname === "string") {
    for (const [type, value] of parseSubjectAltNames(cert.subjectaltname)) {
      const spelt = SAN_TYPES[type];
      if (spelt !== undefined && value !== "") out.push(`${spelt}:${value}`);
    }
  }
  return out;
}
