/* Zero-copy TCP-to-TCP relay (splice(2) through pipes, one epoll thread). See splice_relay.c. */
#ifndef BROOK_SPLICE_RELAY_H
#define BROOK_SPLICE_RELAY_H

#include <node_api.h>

/* Adds spliceSupported, spliceInit, spliceStart, spliceCancel, spliceInfo, spliceLive, spliceLimits to exports. */
void brook_splice_register(napi_env env, napi_value exports);

#endif
