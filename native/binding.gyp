# The native addon brook_native (src/native/addon.ts loads it; each feature falls back on its own):
#   - AES-256-GCM for the data path (src/brook_aead.c; src/crypto/native.ts, else node:crypto);
#   - the zero-copy splice(2) relay (src/splice_relay.c, src/splice_worker.c, Linux; src/net/splice.ts).
# src/brook_native.c is the module that registers both.
# Links against the OpenSSL symbols the node binary itself exports (no system libssl needed).
{
  "targets": [
    {
      "target_name": "brook_native",
      "sources": ["src/brook_native.c", "src/brook_aead.c", "src/splice_relay.c", "src/splice_worker.c", "src/users_lookup.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "defines": ["NAPI_VERSION=8"],
      "conditions": [
        ["OS=='mac'", { "xcode_settings": { "OTHER_CFLAGS": ["-O2"] } }]
      ]
    }
  ]
}
