/*
 * brook_aead: AES-256-GCM for the Brook data path, the AES half of the brook_native addon
 * (brook_native.c is the module; src/crypto/native.ts the JS side).
 *
 * One EVP_CIPHER_CTX per direction is created once per key; each seal/open only
 * resets the IV (EVP_*Init_ex(ctx, NULL, NULL, NULL, iv)), so the key schedule
 * is computed once. Everything is written into the caller's buffers: no
 * allocation per call. OpenSSL comes from the node binary itself (its symbols
 * are exported on official Linux/macOS builds); if they are not, dlopen fails
 * and src/crypto/native.ts falls back to node:crypto.
 *
 * Brook fragment (protocol/brook-stream.md):
 *   [ seal(u16 BE payload length) : 2 + 16 ][ seal(payload) : len + 16 ]
 * The 12-byte nonce's first 8 bytes (LE u64) are incremented after EVERY seal/open.
 *
 * Exports (all but create return negative status codes instead of throwing; the JS side
 * maps them to BrookError):
 *   create(key: Uint8Array(32)) -> External; throws with a BROOK_ERR_* code (src/errors.ts),
 *       which src/native/addon.ts turns into a BrookError
 *   seal(h, nonce, plain, out, offset) -> bytes written | status
 *   open(h, nonce, sealed, out, offset) -> plaintext bytes | status
 *   sealFragments(h, nonce, data, maxPayload, out, offset) -> bytes written | status
 *   openFragments(h, nonce, input, maxPayload, out, offset, res: Int32Array(2))
 *       -> 0 | status; res[0] = consumed, res[1] = written (valid also on error)
 */
#include <node_api.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "brook_aead.h"

#define KEY_SIZE 32
#define NONCE_SIZE 12
#define NONCE_COUNTER_SIZE 8
#define TAG_SIZE 16
#define LENGTH_SIZE 2
#define SEALED_LENGTH_SIZE (LENGTH_SIZE + TAG_SIZE)
#define MAX_LENGTH_FIELD 0xffff

/* status codes, mirrored in src/crypto/native.ts */
#define ST_AUTH (-1)
#define ST_OVERSIZED (-2)
#define ST_RANGE (-3)
#define ST_INTERNAL (-4)
#define ST_ARGS (-5)

/* codes of the errors create throws (error.code; ErrorCodes in src/errors.ts) */
#define CODE_ARGUMENT "BROOK_ERR_NATIVE_ARGUMENT"
#define CODE_RESOURCES "BROOK_ERR_OUT_OF_RESOURCES"
#define CODE_INTERNAL "BROOK_ERR_INTERNAL"

typedef struct {
  EVP_CIPHER_CTX *enc;
  EVP_CIPHER_CTX *dec;
} engine_t;

static void increment_nonce(uint8_t *nonce) {
  for (int i = 0; i < NONCE_COUNTER_SIZE; i++) {
    if (++nonce[i] != 0) return;
  }
}

static int do_seal(engine_t *e, const uint8_t *nonce, const uint8_t *in, size_t len, uint8_t *out) {
  int n = 0, f = 0;
  if (EVP_EncryptInit_ex(e->enc, NULL, NULL, NULL, nonce) != 1) return ST_INTERNAL;
  if (len > 0 && EVP_EncryptUpdate(e->enc, out, &n, in, (int)len) != 1) return ST_INTERNAL;
  if (EVP_EncryptFinal_ex(e->enc, out + n, &f) != 1) return ST_INTERNAL;
  if (EVP_CIPHER_CTX_ctrl(e->enc, EVP_CTRL_GCM_GET_TAG, TAG_SIZE, out + len) != 1) return ST_INTERNAL;
  return (int)len + TAG_SIZE;
}

/* Open `body_len` bytes of ciphertext followed by its tag. On failure the output is wiped. */
static int do_open(engine_t *e, const uint8_t *nonce, const uint8_t *in, size_t body_len, uint8_t *out) {
  int n = 0, f = 0;
  uint8_t tag[TAG_SIZE];
  memcpy(tag, in + body_len, TAG_SIZE); /* copy first: out may alias in */
  if (EVP_DecryptInit_ex(e->dec, NULL, NULL, NULL, nonce) != 1) return ST_INTERNAL;
  if (body_len > 0 && EVP_DecryptUpdate(e->dec, out, &n, in, (int)body_len) != 1) return ST_INTERNAL;
  if (EVP_CIPHER_CTX_ctrl(e->dec, EVP_CTRL_GCM_SET_TAG, TAG_SIZE, tag) != 1) return ST_INTERNAL;
  if (EVP_DecryptFinal_ex(e->dec, out + n, &f) != 1) {
    if (body_len > 0) memset(out, 0, body_len);
    return ST_AUTH;
  }
  return (int)body_len;
}

/* ---- argument helpers ---- */

static int get_bytes(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  void *p = NULL;
  if (napi_get_typedarray_info(env, v, &type, len, &p, &ab, &off) != napi_ok) return 0;
  if (type != napi_uint8_array && type != napi_uint8_clamped_array) return 0;
  *data = (uint8_t *)p;
  return 1;
}

static int get_u32(napi_env env, napi_value v, uint32_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) return 0;
  if (!(d >= 0 && d <= 4294967295.0) || d != (double)(uint32_t)d) return 0;
  *out = (uint32_t)d;
  return 1;
}

static int get_engine(napi_env env, napi_value v, engine_t **e) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || p == NULL) return 0;
  *e = (engine_t *)p;
  return 1;
}

static napi_value num(napi_env env, int64_t v) {
  napi_value r;
  napi_create_int64(env, v, &r);
  return r;
}

/* ---- exports ---- */

static void engine_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  engine_t *e = (engine_t *)data;
  if (e == NULL) return;
  if (e->enc) EVP_CIPHER_CTX_free(e->enc);
  if (e->dec) EVP_CIPHER_CTX_free(e->dec);
  free(e);
}

static napi_value js_create(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  uint8_t *key;
  size_t key_len;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || !get_bytes(env, argv[0], &key, &key_len) || key_len != KEY_SIZE) {
    napi_throw_type_error(env, CODE_ARGUMENT, "brook_aead.create: key must be a 32-byte Uint8Array");
    return NULL;
  }
  engine_t *e = (engine_t *)calloc(1, sizeof(engine_t));
  if (e == NULL) {
    napi_throw_error(env, CODE_RESOURCES, "brook_aead.create: out of memory");
    return NULL;
  }
  e->enc = EVP_CIPHER_CTX_new();
  e->dec = EVP_CIPHER_CTX_new();
  if (e->enc == NULL || e->dec == NULL ||
      EVP_EncryptInit_ex(e->enc, EVP_aes_256_gcm(), NULL, key, NULL) != 1 ||
      EVP_DecryptInit_ex(e->dec, EVP_aes_256_gcm(), NULL, key, NULL) != 1) {
    engine_finalize(env, e, NULL);
    napi_throw_error(env, CODE_INTERNAL, "brook_aead.create: OpenSSL AES-256-GCM init failed");
    return NULL;
  }
  napi_value ext;
  if (napi_create_external(env, e, engine_finalize, NULL, &ext) != napi_ok) {
    engine_finalize(env, e, NULL);
    napi_throw_error(env, CODE_INTERNAL, "brook_aead.create: napi_create_external failed");
    return NULL;
  }
  return ext;
}

/* seal(h, nonce, plain, out, offset) */
static napi_value js_seal(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  engine_t *e;
  uint8_t *nonce, *plain, *out;
  size_t nonce_len, plain_len, out_len;
  uint32_t offset;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 5 || !get_engine(env, argv[0], &e) || !get_bytes(env, argv[1], &nonce, &nonce_len) ||
      nonce_len != NONCE_SIZE || !get_bytes(env, argv[2], &plain, &plain_len) ||
      !get_bytes(env, argv[3], &out, &out_len) || !get_u32(env, argv[4], &offset))
    return num(env, ST_ARGS);
  if (plain_len > INT32_MAX - TAG_SIZE) return num(env, ST_RANGE);
  if ((size_t)offset > out_len || out_len - offset < plain_len + TAG_SIZE) return num(env, ST_RANGE);
  return num(env, do_seal(e, nonce, plain, plain_len, out + offset));
}

/* open(h, nonce, sealed, out, offset) */
static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  engine_t *e;
  uint8_t *nonce, *sealed, *out;
  size_t nonce_len, sealed_len, out_len;
  uint32_t offset;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 5 || !get_engine(env, argv[0], &e) || !get_bytes(env, argv[1], &nonce, &nonce_len) ||
      nonce_len != NONCE_SIZE || !get_bytes(env, argv[2], &sealed, &sealed_len) ||
      !get_bytes(env, argv[3], &out, &out_len) || !get_u32(env, argv[4], &offset))
    return num(env, ST_ARGS);
  if (sealed_len < TAG_SIZE) return num(env, ST_AUTH);
  size_t body = sealed_len - TAG_SIZE;
  if (body > INT32_MAX) return num(env, ST_RANGE);
  if ((size_t)offset > out_len || out_len - offset < body) return num(env, ST_RANGE);
  return num(env, do_open(e, nonce, sealed, body, out + offset));
}

/* sealFragments(h, nonce, data, maxPayload, out, offset) */
static napi_value js_seal_fragments(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  engine_t *e;
  uint8_t *nonce, *data, *out;
  size_t nonce_len, data_len, out_len;
  uint32_t max_payload, offset;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 6 || !get_engine(env, argv[0], &e) || !get_bytes(env, argv[1], &nonce, &nonce_len) ||
      nonce_len != NONCE_SIZE || !get_bytes(env, argv[2], &data, &data_len) ||
      !get_u32(env, argv[3], &max_payload) || !get_bytes(env, argv[4], &out, &out_len) ||
      !get_u32(env, argv[5], &offset))
    return num(env, ST_ARGS);
  if (max_payload < 1 || max_payload > MAX_LENGTH_FIELD) return num(env, ST_ARGS);
  size_t frags = data_len == 0 ? 1 : (data_len + max_payload - 1) / max_payload;
  size_t need = data_len + frags * (SEALED_LENGTH_SIZE + TAG_SIZE);
  if ((size_t)offset > out_len || out_len - offset < need) return num(env, ST_RANGE);
  if (need > INT32_MAX) return num(env, ST_RANGE);

  uint8_t *w = out + offset;
  size_t pos = 0;
  do {
    size_t len = data_len - pos;
    if (len > max_payload) len = max_payload;
    uint8_t lenbuf[LENGTH_SIZE] = {(uint8_t)(len >> 8), (uint8_t)(len & 0xff)};
    int r = do_seal(e, nonce, lenbuf, LENGTH_SIZE, w);
    if (r < 0) return num(env, r);
    increment_nonce(nonce);
    w += r;
    r = do_seal(e, nonce, data + pos, len, w);
    if (r < 0) return num(env, r);
    increment_nonce(nonce);
    w += r;
    pos += len;
  } while (pos < data_len);
  return num(env, (int64_t)(w - (out + offset)));
}

/* openFragments(h, nonce, input, maxPayload, out, offset, res) */
static napi_value js_open_fragments(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  engine_t *e;
  uint8_t *nonce, *input, *out;
  size_t nonce_len, in_len, out_len, res_len;
  uint32_t max_payload, offset;
  napi_typedarray_type rtype;
  napi_value rab;
  size_t roff;
  void *rp = NULL;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 7 || !get_engine(env, argv[0], &e) || !get_bytes(env, argv[1], &nonce, &nonce_len) ||
      nonce_len != NONCE_SIZE || !get_bytes(env, argv[2], &input, &in_len) ||
      !get_u32(env, argv[3], &max_payload) || !get_bytes(env, argv[4], &out, &out_len) ||
      !get_u32(env, argv[5], &offset) ||
      napi_get_typedarray_info(env, argv[6], &rtype, &res_len, &rp, &rab, &roff) != napi_ok ||
      rtype != napi_int32_array || res_len < 2)
    return num(env, ST_ARGS);
  if (max_payload > MAX_LENGTH_FIELD || (size_t)offset > out_len) return num(env, ST_ARGS);
  int32_t *res = (int32_t *)rp;
  size_t consumed = 0, written = 0, room = out_len - offset;
  uint8_t *w = out + offset;
  int status = 0;
  res[0] = 0;
  res[1] = 0;
  if (in_len > INT32_MAX) return num(env, ST_RANGE);

  while (in_len - consumed >= SEALED_LENGTH_SIZE) {
    const uint8_t *p = input + consumed;
    uint8_t lenbuf[LENGTH_SIZE];
    int r = do_open(e, nonce, p, LENGTH_SIZE, lenbuf);
    if (r < 0) { status = r; break; }
    size_t len = ((size_t)lenbuf[0] << 8) | lenbuf[1];
    if (len > max_payload) { status = ST_OVERSIZED; break; }
    /* incomplete payload: stop without advancing the nonce (the length is opened again next time) */
    if (in_len - consumed - SEALED_LENGTH_SIZE < len + TAG_SIZE) break;
    if (room - written < len) { status = ST_RANGE; break; }
    uint8_t second[NONCE_SIZE];
    memcpy(second, nonce, NONCE_SIZE);
    increment_nonce(second);
    r = do_open(e, second, p + SEALED_LENGTH_SIZE, len, w + written);
    if (r < 0) { status = r; break; }
    increment_nonce(second);
    memcpy(nonce, second, NONCE_SIZE);
    consumed += SEALED_LENGTH_SIZE + len + TAG_SIZE;
    written += len;
  }
  res[0] = (int32_t)consumed;
  res[1] = (int32_t)written;
  return num(env, status);
}

void brook_aead_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"create", NULL, js_create, NULL, NULL, NULL, napi_default, NULL},
    {"seal", NULL, js_seal, NULL, NULL, NULL, napi_default, NULL},
    {"open", NULL, js_open, NULL, NULL, NULL, napi_default, NULL},
    {"sealFragments", NULL, js_seal_fragments, NULL, NULL, NULL, napi_default, NULL},
    {"openFragments", NULL, js_open_fragments, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  napi_value v;
  napi_create_string_utf8(env, OPENSSL_VERSION_TEXT, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, exports, "opensslHeaders", v);
}
