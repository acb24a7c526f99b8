/* AES-256-GCM for the Brook data path. See brook_aead.c. */
#ifndef BROOK_AEAD_H
#define BROOK_AEAD_H

#include <node_api.h>

/* Adds create, seal, open, sealFragments, openFragments and opensslHeaders to exports. */
void brook_aead_register(napi_env env, napi_value exports);

#endif
