/*
 * brook_native: the native addon of brook-ts (one Node-API module, three features). Each feature
 * adds its own exports; the JS side loads the file once (src/native/addon.ts) and each feature
 * checks its own part, so one failing does not disable the other.
 *
 *   brook_aead.c    AES-256-GCM for the Brook data path (src/crypto/native.ts)
 *   splice_relay.c  the zero-copy TCP relay, Linux splice(2) (src/net/splice-addon.ts)
 *   users_lookup.c  the users file's key lookup, findKey (src/users/native.ts)
 */
#include <node_api.h>

#include "brook_aead.h"
#include "splice_relay.h"
#include "users_lookup.h"

static napi_value init(napi_env env, napi_value exports) {
  brook_aead_register(env, exports);
  brook_splice_register(env, exports);
  brook_users_register(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
