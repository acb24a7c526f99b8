/* Which user's key opens a Brook stream's first sealed length (issue 19). See users_lookup.c. */
#ifndef BROOK_USERS_LOOKUP_H
#define BROOK_USERS_LOOKUP_H

#include <node_api.h>

/* Adds findKey and findKeyPortable to exports (nothing when SHA256_Transform is not exported by node). */
void brook_users_register(napi_env env, napi_value exports);

#endif
