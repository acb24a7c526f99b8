/*
 * users_lookup: which user's password opens the first sealed length of a Brook stream (issue 19,
 * many users on one server; protocol/users.md#key-lookup). Part of the brook_aead addon.
 *
 *   client -> server: [ nonce : 12 ][ seal(u16 BE length) : 2 + 16 ][ seal(first payload) ] ...
 *
 * Exports:
 *   findKey(nonce: Uint8Array(12), sealed: Uint8Array(18), passwords: Uint8Array,
 *           offsets: Uint32Array(n + 1), info: Uint8Array, order: Uint32Array, keyOut?: Uint8Array(32))
 *     -> the first index i in `order` whose key opens `sealed`, -1 when none does, < -1 a status.
 *     User i's password is passwords[offsets[i] .. offsets[i + 1]). keyOut receives the found key.
 *   findKeyPortable(0 | 1): force the portable GHASH (tests); returns whether CLMUL is in use.
 *
 * Per user tried:
 *   key = HKDF-SHA256(ikm = password, salt = nonce, info)       RFC 5869, one expand block:
 *     PRK = HMAC(nonce, password): the nonce is the HMAC key, so its inner and outer pad blocks are
 *           compressed once per call; per user 1 compression for a password of up to 55 bytes
 *           (one more per 64 bytes) and 1 for the outer hash;
 *     key = HMAC(PRK, info || 0x01): 4 compressions for an info of up to 54 bytes.
 *   AES-256-GCM tag of the 2-byte ciphertext, no AAD, nonce counter 0 (the first seal of the stream):
 *     H = E(0^128), tag = GHASH_H(C || 0^112, 0^64 || bitlen(C)) ^ E(nonce || 0x00000001).
 *     One key schedule and two blocks through one EVP ECB context (AES-NI when OpenSSL has it);
 *     GHASH with PCLMULQDQ on x86-64 when the CPU has it, else constant-time 64-bit shifts.
 * No allocation per user and one JS -> C crossing per connection.
 *
 * SHA256_Transform is looked up with dlsym when the addon loads (it is deprecated in OpenSSL 3): a node
 * that does not export it gets no findKey, and src/users/native.ts uses the node:crypto lookup.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <node_api.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>
#ifndef _WIN32
#include <dlfcn.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_CLMUL_PATH 1
#endif

#include "users_lookup.h"

#define NONCE_SIZE 12
#define TAG_SIZE 16
#define LENGTH_SIZE 2
#define SEALED_LENGTH_SIZE (LENGTH_SIZE + TAG_SIZE)
#define KEY_SIZE 32
#define SHA_BLOCK 64
#define SHA_DIGEST 32
#define SHA_LENGTH_FIELD 8
#define AES_BLOCK 16
#define HMAC_IPAD 0x36
#define HMAC_OPAD 0x5c
#define HKDF_FIRST_BLOCK 0x01
/* GCM: J0 = nonce || 0x00000001 for a 96-bit nonce */
#define GCM_J0_COUNTER 1
/* GF(2^128) reduction constant of GHASH (x^128 + x^7 + x^2 + x + 1, bit-reflected) */
#define GHASH_R 0xe100000000000000ULL

/* statuses, mirrored in src/users/native.ts */
#define LOOKUP_NONE (-1)
#define ST_INTERNAL (-4)
#define ST_ARGS (-5)

typedef void (*sha256_transform_f)(SHA256_CTX *c, const unsigned char *data);
static sha256_transform_f sha256_transform = NULL;
static int use_clmul = 0;

static const uint32_t SHA256_IV[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

/* ---- SHA-256 over the compression function, states copied by value ---- */

typedef struct {
  SHA256_CTX c;            /* only c.h (the chaining value) is used by the transform */
  uint8_t buf[SHA_BLOCK];  /* bytes of the block being filled */
  size_t have;             /* bytes in buf */
  uint64_t total;          /* bytes hashed so far */
} sha_t;

static void sha_update(sha_t *s, const uint8_t *p, size_t len) {
  s->total += len;
  if (s->have > 0) {
    size_t take = SHA_BLOCK - s->have < len ? SHA_BLOCK - s->have : len;
    memcpy(s->buf + s->have, p, take);
    s->have += take;
    p += take;
    len -= take;
    if (s->have < SHA_BLOCK) return;
    sha256_transform(&s->c, s->buf);
    s->have = 0;
  }
  for (; len >= SHA_BLOCK; p += SHA_BLOCK, len -= SHA_BLOCK) sha256_transform(&s->c, p);
  memcpy(s->buf, p, len);
  s->have = len;
}

static void store_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static void sha_final(sha_t *s, uint8_t out[SHA_DIGEST]) {
  uint64_t bits = s->total * 8;
  s->buf[s->have++] = 0x80;
  if (s->have > SHA_BLOCK - SHA_LENGTH_FIELD) {
    memset(s->buf + s->have, 0, SHA_BLOCK - s->have);
    sha256_transform(&s->c, s->buf);
    s->have = 0;
  }
  memset(s->buf + s->have, 0, SHA_BLOCK - SHA_LENGTH_FIELD - s->have);
  store_be32(s->buf + SHA_BLOCK - SHA_LENGTH_FIELD, (uint32_t)(bits >> 32));
  store_be32(s->buf + SHA_BLOCK - SHA_LENGTH_FIELD / 2, (uint32_t)bits);
  sha256_transform(&s->c, s->buf);
  for (int i = 0; i < 8; i++) store_be32(out + 4 * i, (uint32_t)s->c.h[i]);
}

/* The state after one HMAC pad block: key (at most one block) XOR pad, zero-extended. */
static void hmac_pad_state(sha_t *s, const uint8_t *key, size_t key_len, uint8_t pad) {
  uint8_t block[SHA_BLOCK];
  memset(block, pad, SHA_BLOCK);
  for (size_t i = 0; i < key_len; i++) block[i] ^= key[i];
  for (int i = 0; i < 8; i++) s->c.h[i] = SHA256_IV[i];
  sha256_transform(&s->c, block);
  s->have = 0;
  s->total = SHA_BLOCK;
}

/* ---- GHASH of one ciphertext block and the length block ---- */

static uint64_t load_be64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}

static void store_be64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

/* z = x * y in GCM's GF(2^128) (NIST SP 800-38D, algorithm 1), over the first `bits` bits of x
 * (x must be zero past them). Constant time for a fixed `bits`. Halves are big-endian u64. */
static void gf_mul_portable(uint64_t z[2], const uint64_t x[2], const uint64_t y[2], int bits) {
  uint64_t zh = 0, zl = 0, vh = y[0], vl = y[1];
  for (int i = 0; i < bits; i++) {
    uint64_t bit = i < 64 ? (x[0] >> (63 - i)) & 1 : (x[1] >> (127 - i)) & 1;
    uint64_t m = (uint64_t)0 - bit;
    zh ^= vh & m;
    zl ^= vl & m;
    uint64_t lsb = vl & 1;
    vl = (vl >> 1) | (vh << 63);
    vh = (vh >> 1) ^ (GHASH_R & ((uint64_t)0 - lsb));
  }
  z[0] = zh;
  z[1] = zl;
}

/* GHASH_H(c || 0^112, 0^64 || 16) for a 2-byte ciphertext c, into out (16 bytes). */
static void ghash_length_portable(const uint8_t h_bytes[AES_BLOCK], const uint8_t c[LENGTH_SIZE], uint8_t out[AES_BLOCK]) {
  uint64_t h[2] = {load_be64(h_bytes), load_be64(h_bytes + 8)};
  uint64_t x[2] = {((uint64_t)c[0] << 56) | ((uint64_t)c[1] << 48), 0};
  uint64_t y[2];
  gf_mul_portable(y, x, h, LENGTH_SIZE * 8); /* c is public: only its 16 bits are walked */
  y[1] ^= (uint64_t)LENGTH_SIZE * 8;         /* the length block: bitlen(A) = 0, bitlen(C) = 16 */
  gf_mul_portable(x, y, h, 128);
  store_be64(out, x[0]);
  store_be64(out + 8, x[1]);
}

#ifdef HAVE_CLMUL_PATH
/* x * y in GHASH's field on byte-reversed operands: carry-less 128x128 -> 256, shift left by one
 * (GHASH's bit order is reflected), reduce modulo x^128 + x^7 + x^2 + x + 1. */
__attribute__((target("pclmul,ssse3"))) static __m128i gf_mul_clmul(__m128i a, __m128i b) {
  __m128i lo = _mm_clmulepi64_si128(a, b, 0x00);
  __m128i hi = _mm_clmulepi64_si128(a, b, 0x11);
  __m128i mid = _mm_xor_si128(_mm_clmulepi64_si128(a, b, 0x10), _mm_clmulepi64_si128(a, b, 0x01));
  lo = _mm_xor_si128(lo, _mm_slli_si128(mid, 8));
  hi = _mm_xor_si128(hi, _mm_srli_si128(mid, 8));
  /* [hi:lo] <<= 1 */
  __m128i lo_carry = _mm_srli_epi32(lo, 31);
  __m128i hi_carry = _mm_srli_epi32(hi, 31);
  lo = _mm_slli_epi32(lo, 1);
  hi = _mm_slli_epi32(hi, 1);
  __m128i cross = _mm_srli_si128(lo_carry, 12);
  hi = _mm_or_si128(_mm_or_si128(hi, _mm_slli_si128(hi_carry, 4)), cross);
  lo = _mm_or_si128(lo, _mm_slli_si128(lo_carry, 4));
  /* reduce: first phase */
  __m128i t = _mm_xor_si128(_mm_xor_si128(_mm_slli_epi32(lo, 31), _mm_slli_epi32(lo, 30)), _mm_slli_epi32(lo, 25));
  __m128i carry = _mm_srli_si128(t, 4);
  lo = _mm_xor_si128(lo, _mm_slli_si128(t, 12));
  /* second phase */
  __m128i u = _mm_xor_si128(_mm_xor_si128(_mm_srli_epi32(lo, 1), _mm_srli_epi32(lo, 2)), _mm_srli_epi32(lo, 7));
  u = _mm_xor_si128(_mm_xor_si128(u, carry), lo);
  return _mm_xor_si128(hi, u);
}

__attribute__((target("pclmul,ssse3"))) static void ghash_length_clmul(const uint8_t h_bytes[AES_BLOCK], const uint8_t c[LENGTH_SIZE], uint8_t out[AES_BLOCK]) {
  const __m128i reverse = _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  uint8_t cblock[AES_BLOCK] = {c[0], c[1]};
  uint8_t lblock[AES_BLOCK] = {0};
  lblock[AES_BLOCK - 1] = LENGTH_SIZE * 8;
  __m128i h = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)h_bytes), reverse);
  __m128i x = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)cblock), reverse);
  __m128i l = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)lblock), reverse);
  x = gf_mul_clmul(x, h);
  x = gf_mul_clmul(_mm_xor_si128(x, l), h);
  _mm_storeu_si128((__m128i *)out, _mm_shuffle_epi8(x, reverse));
}
#endif

static void ghash_length(const uint8_t h[AES_BLOCK], const uint8_t c[LENGTH_SIZE], uint8_t out[AES_BLOCK]) {
#ifdef HAVE_CLMUL_PATH
  if (use_clmul) {
    ghash_length_clmul(h, c, out);
    return;
  }
#endif
  ghash_length_portable(h, c, out);
}

/* ---- the lookup ---- */

typedef struct {
  sha_t inner;  /* HMAC(nonce, .) after its ipad block */
  sha_t outer;  /* after its opad block */
  const uint8_t *info;
  size_t info_len;
  const uint8_t *sealed;
  uint8_t blocks_in[2 * AES_BLOCK]; /* 0^128 || J0 */
  EVP_CIPHER_CTX *ecb;
} lookup_t;

/* HKDF-SHA256(password, salt = nonce, info), 32 bytes. */
static void derive(const lookup_t *l, const uint8_t *pw, size_t pw_len, uint8_t key[KEY_SIZE]) {
  uint8_t digest[SHA_DIGEST], prk[SHA_DIGEST];
  const uint8_t first_block = HKDF_FIRST_BLOCK;
  sha_t s = l->inner;
  sha_update(&s, pw, pw_len);
  sha_final(&s, digest);
  s = l->outer;
  sha_update(&s, digest, SHA_DIGEST);
  sha_final(&s, prk);
  hmac_pad_state(&s, prk, SHA_DIGEST, HMAC_IPAD);
  sha_update(&s, l->info, l->info_len);
  sha_update(&s, &first_block, 1);
  sha_final(&s, digest);
  hmac_pad_state(&s, prk, SHA_DIGEST, HMAC_OPAD);
  sha_update(&s, digest, SHA_DIGEST);
  sha_final(&s, key);
}

/* 1 when `key` opens the sealed length, 0 when not, ST_INTERNAL on an OpenSSL failure. */
static int opens(const lookup_t *l, const uint8_t key[KEY_SIZE]) {
  uint8_t enc[2 * AES_BLOCK], tag[AES_BLOCK];
  int n = 0;
  if (EVP_EncryptInit_ex(l->ecb, NULL, NULL, key, NULL) != 1) return ST_INTERNAL;
  if (EVP_EncryptUpdate(l->ecb, enc, &n, l->blocks_in, (int)sizeof(enc)) != 1 || n != (int)sizeof(enc)) return ST_INTERNAL;
  ghash_length(enc, l->sealed, tag);
  for (int i = 0; i < AES_BLOCK; i++) tag[i] ^= enc[AES_BLOCK + i];
  return CRYPTO_memcmp(tag, l->sealed + LENGTH_SIZE, TAG_SIZE) == 0;
}

/* ---- argument helpers ---- */

static int typed(napi_env env, napi_value v, napi_typedarray_type want, void **data, size_t *len) {
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return 0;
  if (napi_get_typedarray_info(env, v, &type, len, data, &ab, &off) != napi_ok) return 0;
  if (type == napi_uint8_clamped_array) type = napi_uint8_array;
  return type == want;
}

static napi_value num(napi_env env, int64_t v) {
  napi_value r;
  napi_create_int64(env, v, &r);
  return r;
}

/* Offsets are checked for the users tried only (a warm lookup costs the same with 10 or 10,000 users):
 * each tried user's range must lie inside the passwords buffer. */
static int64_t run_lookup(lookup_t *l, const uint8_t *pws, size_t pw_len, const uint32_t *offsets, size_t users,
                          const uint32_t *order, size_t tries, uint8_t *key_out) {
  uint8_t key[KEY_SIZE];
  for (size_t t = 0; t < tries; t++) {
    uint32_t i = order[t];
    if (i >= users || offsets[i] > offsets[i + 1] || offsets[i + 1] > pw_len) {
      OPENSSL_cleanse(key, KEY_SIZE);
      return ST_ARGS;
    }
    derive(l, pws + offsets[i], offsets[i + 1] - offsets[i], key);
    int r = opens(l, key);
    if (r < 0) return r;
    if (r == 1) {
      if (key_out) memcpy(key_out, key, KEY_SIZE);
      OPENSSL_cleanse(key, KEY_SIZE);
      return i;
    }
  }
  OPENSSL_cleanse(key, KEY_SIZE);
  return LOOKUP_NONE;
}

/* findKey(nonce, sealed, passwords, offsets, info, order, keyOut?) */
static napi_value js_find_key(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  void *nonce, *sealed, *pws, *offsets, *inf, *order, *key_out = NULL;
  size_t nonce_len, sealed_len, pw_len, off_count, info_len, tries, key_len = 0;
  napi_valuetype t7 = napi_undefined;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 6 || !typed(env, argv[0], napi_uint8_array, &nonce, &nonce_len) || nonce_len != NONCE_SIZE ||
      !typed(env, argv[1], napi_uint8_array, &sealed, &sealed_len) || sealed_len != SEALED_LENGTH_SIZE ||
      !typed(env, argv[2], napi_uint8_array, &pws, &pw_len) || !typed(env, argv[3], napi_uint32_array, &offsets, &off_count) ||
      !typed(env, argv[4], napi_uint8_array, &inf, &info_len) || !typed(env, argv[5], napi_uint32_array, &order, &tries))
    return num(env, ST_ARGS);
  if (argc >= 7) napi_typeof(env, argv[6], &t7);
  if (t7 != napi_undefined && (!typed(env, argv[6], napi_uint8_array, &key_out, &key_len) || key_len != KEY_SIZE)) return num(env, ST_ARGS);
  if (off_count < 1) return num(env, ST_ARGS);

  lookup_t l;
  hmac_pad_state(&l.inner, (const uint8_t *)nonce, NONCE_SIZE, HMAC_IPAD);
  hmac_pad_state(&l.outer, (const uint8_t *)nonce, NONCE_SIZE, HMAC_OPAD);
  l.info = (const uint8_t *)inf;
  l.info_len = info_len;
  l.sealed = (const uint8_t *)sealed;
  memset(l.blocks_in, 0, sizeof(l.blocks_in));
  memcpy(l.blocks_in + AES_BLOCK, nonce, NONCE_SIZE);
  l.blocks_in[2 * AES_BLOCK - 1] = GCM_J0_COUNTER;
  l.ecb = EVP_CIPHER_CTX_new();
  if (l.ecb == NULL || EVP_EncryptInit_ex(l.ecb, EVP_aes_256_ecb(), NULL, NULL, NULL) != 1 ||
      EVP_CIPHER_CTX_set_padding(l.ecb, 0) != 1) {
    if (l.ecb) EVP_CIPHER_CTX_free(l.ecb);
    return num(env, ST_INTERNAL);
  }
  int64_t r = run_lookup(&l, (const uint8_t *)pws, pw_len, (const uint32_t *)offsets, off_count - 1, (const uint32_t *)order,
                         tries, (uint8_t *)key_out);
  EVP_CIPHER_CTX_free(l.ecb);
  return num(env, r);
}

/* findKeyPortable(force): 1 forces the portable GHASH, 0 goes back to CLMUL where the CPU has it. */
static napi_value js_find_key_portable(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  bool force = false;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc >= 1) napi_get_value_bool(env, argv[0], &force);
#ifdef HAVE_CLMUL_PATH
  use_clmul = !force && __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("ssse3");
#else
  (void)force;
  use_clmul = 0;
#endif
  napi_value v;
  napi_get_boolean(env, use_clmul != 0, &v);
  return v;
}

void brook_users_register(napi_env env, napi_value exports) {
#ifdef _WIN32
  sha256_transform = SHA256_Transform;
#else
  sha256_transform = (sha256_transform_f)dlsym(RTLD_DEFAULT, "SHA256_Transform");
#endif
  if (sha256_transform == NULL) return; /* no findKey: the JS side uses node:crypto */
#ifdef HAVE_CLMUL_PATH
  __builtin_cpu_init();
  use_clmul = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("ssse3");
#endif
  napi_property_descriptor props[] = {
    {"findKey", NULL, js_find_key, NULL, NULL, NULL, napi_default, NULL},
    {"findKeyPortable", NULL, js_find_key_portable, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}
