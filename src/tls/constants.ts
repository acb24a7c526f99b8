/** Where HTTP-01 tokens are served (RFC 8555 section 8.3). Kept apart so the TLS helpers load without acme-client. */
export const ACME_CHALLENGE_PREFIX = '/.well-known/acme-challenge/';
