/**
 * Every size on the wire, named once. See protocol/brook-stream.md.
 */

/** Nonce that starts each direction of a Brook stream. */
export const NONCE_SIZE = 12;
/** Bytes of the nonce that form the little-endian u64 counter advanced after every seal. */
export const NONCE_COUNTER_SIZE = 8;
/** AES-256 key derived with HKDF-SHA256. */
export const KEY_SIZE = 32;
/** AES-GCM authentication tag. */
export const TAG_SIZE = 16;
/** Plaintext fragment length field (u16 big-endian). */
export const LENGTH_SIZE = 2;
/** The sealed length field on the wire. */
export const SEALED_LENGTH_SIZE = LENGTH_SIZE + TAG_SIZE;
/** Overhead of one fragment on the wire beyond its payload. */
export const FRAGMENT_OVERHEAD = SEALED_LENGTH_SIZE + TAG_SIZE;

/** Largest whole TCP fragment on the wire (sealed length + sealed payload). */
export const MAX_TCP_FRAGMENT = 2048;
/** Largest TCP payload in one fragment: 2048 - 18 - 16 = 2014. */
export const MAX_TCP_PAYLOAD = MAX_TCP_FRAGMENT - FRAGMENT_OVERHEAD;
/** The client's first fragment is bounded like a TCP fragment, also for UDP streams. */
export const MAX_FIRST_FRAGMENT = MAX_TCP_FRAGMENT;
export const MAX_FIRST_PAYLOAD = MAX_FIRST_FRAGMENT - FRAGMENT_OVERHEAD;
/** Largest whole UDP-over-stream fragment on the wire. */
export const MAX_UDP_FRAGMENT = 65507;
/** Largest datagram carried in one UDP-over-stream fragment: 65507 - 34 = 65473. */
export const MAX_UDP_PAYLOAD = MAX_UDP_FRAGMENT - FRAGMENT_OVERHEAD;

/** u32 big-endian Unix time at the head of the first fragment. */
export const TIMESTAMP_SIZE = 4;
/** Upstream refuses a first fragment whose time is more than this many seconds old. */
export const MAX_HEADER_AGE_SECONDS = 60;
/** brook-ts refuses a first fragment whose time is more than this many seconds ahead (upstream: no bound). */
export const DEFAULT_MAX_HEADER_AHEAD_SECONDS = 60;

/** SOCKS5 address encodings (RFC 1928). */
export const ATYP_IPV4 = 0x01;
export const ATYP_DOMAIN = 0x03;
export const ATYP_IPV6 = 0x04;
export const IPV4_SIZE = 4;
export const IPV6_SIZE = 16;
export const PORT_SIZE = 2;
export const ATYP_SIZE = 1;
export const DOMAIN_LENGTH_SIZE = 1;
export const MAX_DOMAIN_LENGTH = 255;
/** Longest encoded address: ATYP + len + 255 + port. */
export const MAX_ADDRESS_SIZE = ATYP_SIZE + DOMAIN_LENGTH_SIZE + MAX_DOMAIN_LENGTH + PORT_SIZE;

/** withoutBrookProtocol: SHA-256(password) on the wire. */
export const WOB_PASSWORD_SIZE = 32;
/** withoutBrookProtocol: u16 big-endian header length, and UDP datagram length prefix. */
export const WOB_LENGTH_SIZE = 2;
/** withoutBrookProtocol: the server refuses a header longer than this. */
export const MAX_WOB_HEADER = 2048;
/** withoutBrookProtocol UDP: largest datagram after the u16 length prefix (65507 - 2). */
export const MAX_WOB_UDP_PAYLOAD = 65507 - WOB_LENGTH_SIZE;

/** Bound on the HTTP upgrade request/response head we are willing to buffer. */
export const MAX_UPGRADE_HEAD = 16 * 1024;
/** Sec-WebSocket-Key is base64 of this many random bytes. */
export const WS_KEY_RANDOM_SIZE = 16;
/** RFC 6455 GUID appended to the key before SHA-1. */
export const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
