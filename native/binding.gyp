# Optional native AES-256-GCM backend (src/crypto/native.ts loads it, falls back to node:crypto).
# Also the zero-copy splice(2) relay (src/splice_relay.c, Linux; src/net/splice.ts).
# Links against the OpenSSL symbols the node binary itself exports (no system libssl needed).
{
  "targets": [
    {
      "target_name": "brook_aead",
      "sources": ["src/brook_aead.c", "src/splice_relay.c", "src/splice_worker.c", "src/users_lookup.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "defines": ["NAPI_VERSION=8"],
      "conditions": [
        ["OS=='mac'", { "xcode_settings": { "OTHER_CFLAGS": ["-O2"] } }]
      ]
    }
  ]
}
