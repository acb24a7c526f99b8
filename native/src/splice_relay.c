/*
 * Zero-copy relay between two connected TCP sockets (withoutBrookProtocol tunnels and the
 * plain SOCKS5 pass-through), the way upstream's Go relay moves them (TCPConn.ReadFrom):
 * splice(2) from one socket into a pipe and from the pipe into the other, so the bytes never
 * enter user space. JS side and the hand-off rules: src/net/splice.ts.
 *
 *   fd[0] --splice--> pipe d[0] --splice--> fd[1]        (direction 0: "up")
 *   fd[0] <--splice-- pipe d[1] <--splice-- fd[1]        (direction 1: "down")
 *
 * Files: this one is the N-API side (main thread); the worker thread's loop, readiness flags
 * and pipe growth are in splice_worker.c; the shared types and sizes in splice_internal.h.
 *
 * Threads: ONE worker thread per process (per Node environment) runs an epoll loop over every
 * spliced relay. One thread, not one per relay: 1,000 tunnels would otherwise be 1,000 threads
 * (stacks, scheduler load) for work the kernel does anyway (splice moves page references, it
 * does not copy); one thread moves several GB/s on loopback, and the machine this serves
 * usually has few cores, one of them busy with the JS event loop.
 *
 * Ownership (the rule that keeps descriptors safe):
 *   - The sockets' descriptors belong to JS (libuv closes them). JS stops libuv's reads and
 *     drains its write queue before spliceStart; from then on only the worker touches them,
 *     and JS does not close them until the relay is reported finished.
 *   - The worker removes both descriptors from its epoll set and closes the relay's pipes
 *     BEFORE it posts the report; after that it never touches the relay's descriptors again.
 *   - The addon never closes a socket: the report says how it ended (both directions done,
 *     abort with an errno, cancelled by JS, refused before it began) and JS closes them
 *     (FIN or RST) itself.
 *   - The relay's memory is owned by the main thread: freed only when its report has been
 *     delivered to JS (call_js), so spliceInfo/spliceCancel from JS are always safe.
 *   - Commands (add, cancel) go main -> worker through one FIFO under a mutex plus an eventfd;
 *     a cancel names a slot, and a stale cancel is ignored because it is queued before any
 *     later add that reuses the slot.
 *
 * Half-close: a direction whose source read EOF and whose pipe is empty shuts the destination's
 * write half (shutdown SHUT_WR); the relay is done when both directions are. Resets: an error
 * from splice or SO_ERROR (ECONNRESET, EPIPE, ...) aborts the relay; an EOF while our write half
 * toward that socket is still open is checked with getpeername (ENOTCONN: it was an RST;
 * protocol/resets.md). Bounded: at most MAX_RELAYS relays, one pipe per direction (the pipe is
 * the only buffer: the kernel's default size, grown for a busy direction up to a named maximum
 * within a process-wide budget, see splice_internal.h), SPLICE_ROUNDS rounds per relay per
 * wakeup (a busy relay cannot starve the others), no busy loop (epoll_wait blocks when nothing
 * is ready).
 */
#define _GNU_SOURCE
#include "splice_relay.h"
#include "splice_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__linux__)
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---------------- main thread ---------------- */

static state_t *get_state(napi_env env) {
  void *p = NULL;
  if (napi_get_instance_data(env, &p) != napi_ok) return NULL;
  return p;
}

static napi_value num(napi_env env, double v) {
  napi_value out;
  napi_create_double(env, v, &out);
  return out;
}

static void free_relay(state_t *st, relay_t *r) {
  splice_close_pipes(r);
  if (r->slot < MAX_RELAYS && st->slots[r->slot] == r) {
    st->slots[r->slot] = NULL;
    st->free_slots[st->free_top++] = r->slot;
    st->live--;
  }
  free(r);
}

/* A report reaches JS: cb(slot, kind, errno, up, down); then the relay is freed. */
static void call_js(napi_env env, napi_value cb, void *context, void *data) {
  if (env == NULL || cb == NULL) return; /* teardown: the cleanup hook frees everything */
  state_t *st = context;
  relay_t *r = data;
  napi_value argv[5];
  argv[0] = num(env, r->slot);
  argv[1] = num(env, r->kind);
  argv[2] = num(env, r->err);
  argv[3] = num(env, (double)__atomic_load_n(&r->moved[0], __ATOMIC_RELAXED));
  argv[4] = num(env, (double)__atomic_load_n(&r->moved[1], __ATOMIC_RELAXED));
  free_relay(st, r);
  if (st->live == 0) napi_unref_threadsafe_function(env, st->tsfn);
  napi_value undef;
  napi_get_undefined(env, &undef);
  napi_call_function(env, undef, cb, 5, argv, NULL);
}

static int enqueue(state_t *st, int type, uint32_t slot, relay_t *r) {
  cmd_t *c = malloc(sizeof *c);
  if (!c) return -ENOMEM;
  c->type = type;
  c->slot = slot;
  c->r = r;
  c->next = NULL;
  if (pthread_mutex_lock(&st->mu) != 0) {
    free(c);
    return -EIO;
  }
  if (st->cmd_tail) st->cmd_tail->next = c;
  else st->cmd_head = c;
  st->cmd_tail = c;
  pthread_mutex_unlock(&st->mu);
  uint64_t one = 1;
  for (;;) {
    ssize_t n = write(st->wake, &one, sizeof one);
    /* EAGAIN: the counter is full, so the worker is woken anyway */
    if (n >= 0 || errno != EINTR) break;
  }
  return 0;
}

static void cleanup_hook(void *arg) {
  state_t *st = arg;
  /* no more call_js with an environment: reports still queued are dropped (env NULL) */
  napi_release_threadsafe_function(st->tsfn, napi_tsfn_abort);
  if (pthread_mutex_lock(&st->mu) == 0) {
    st->stopping = 1;
    pthread_mutex_unlock(&st->mu);
  }
  uint64_t one = 1;
  while (write(st->wake, &one, sizeof one) < 0 && errno == EINTR) {
  }
  pthread_join(st->thread, NULL);
  for (uint32_t s = 0; s < MAX_RELAYS; s++) {
    if (st->slots[s]) free_relay(st, st->slots[s]);
  }
  cmd_t *c = st->cmd_head;
  while (c) {
    cmd_t *next = c->next;
    free(c);
    c = next;
  }
  splice_close_fd(st->ep);
  splice_close_fd(st->wake);
  pthread_mutex_destroy(&st->mu);
  free(st->slots);
  free(st->free_slots);
  free(st->active);
  free(st);
}

static int get_int(napi_env env, napi_value v, int32_t *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) return 0;
  return napi_get_value_int32(env, v, out) == napi_ok;
}

/* spliceInit(cb): start the worker; cb receives every report. 0 or -errno. */
static napi_value js_init(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return num(env, -EINVAL);
  napi_valuetype t;
  if (napi_typeof(env, argv[0], &t) != napi_ok || t != napi_function) return num(env, -EINVAL);
  if (get_state(env) != NULL) return num(env, -EALREADY);

  state_t *st = calloc(1, sizeof *st);
  if (!st) return num(env, -ENOMEM);
  st->env = env;
  st->ep = st->wake = -1;
  st->grow_max = PIPE_GROW_MAX_DEFAULT;
  st->grow_budget = PIPE_GROW_BUDGET_DEFAULT;
  st->slots = calloc(MAX_RELAYS, sizeof *st->slots);
  st->active = calloc(MAX_RELAYS, sizeof *st->active);
  st->free_slots = malloc(MAX_RELAYS * sizeof *st->free_slots);
  int err = 0;
  if (!st->slots || !st->active || !st->free_slots) err = ENOMEM;
  if (!err && pthread_mutex_init(&st->mu, NULL) != 0) err = ENOMEM;
  int mu_ok = !err;
  if (!err && (st->ep = epoll_create1(EPOLL_CLOEXEC)) < 0) err = errno;
  if (!err && (st->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) err = errno;
  if (!err) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.ptr = NULL; /* the wake-up descriptor */
    if (epoll_ctl(st->ep, EPOLL_CTL_ADD, st->wake, &ev) != 0) err = errno;
  }
  napi_value name;
  if (!err && napi_create_string_utf8(env, "brook-ts splice relay", NAPI_AUTO_LENGTH, &name) != napi_ok) err = EIO;
  if (!err && napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, st, call_js, &st->tsfn) != napi_ok) err = EIO;
  int tsfn_ok = !err;
  if (!err) {
    napi_unref_threadsafe_function(env, st->tsfn); /* referenced only while relays run */
    /* the worker must not take the process's signals (Node ignores SIGPIPE; block all here) */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int pe = pthread_create(&st->thread, NULL, splice_worker, st);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pe != 0) err = pe;
  }
  if (err) {
    if (tsfn_ok) napi_release_threadsafe_function(st->tsfn, napi_tsfn_abort);
    splice_close_fd(st->ep);
    splice_close_fd(st->wake);
    if (mu_ok) pthread_mutex_destroy(&st->mu);
    free(st->slots);
    free(st->active);
    free(st->free_slots);
    free(st);
    return num(env, -err);
  }
  /* after the threadsafe function's own hook: ours runs first (hooks run in reverse order) */
  napi_set_instance_data(env, st, NULL, NULL);
  napi_add_env_cleanup_hook(env, cleanup_hook, st);
  return num(env, 0);
}

static int check_socket(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return -errno;
  if (!(fl & O_NONBLOCK)) return -EINVAL;
  int type = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return -errno;
  if (type != SOCK_STREAM) return -EINVAL;
  return 0;
}

/* spliceStart(fdA, fdB): the relay's slot (>= 0), or -errno (then nothing was taken over). */
static napi_value js_start(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t a, b;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) return num(env, -EINVAL);
  if (!get_int(env, argv[0], &a) || !get_int(env, argv[1], &b) || a < 0 || b < 0 || a == b) return num(env, -EINVAL);
  state_t *st = get_state(env);
  if (!st) return num(env, -ENOTCONN);
  if (__atomic_load_n(&st->broken, __ATOMIC_ACQUIRE)) return num(env, -EIO);
  int e = check_socket(a);
  if (!e) e = check_socket(b);
  if (e) return num(env, e);
  if (st->free_top == 0 && st->next_fresh >= MAX_RELAYS) return num(env, -EAGAIN);

  relay_t *r = calloc(1, sizeof *r);
  if (!r) return num(env, -ENOMEM);
  r->fd[0] = a;
  r->fd[1] = b;
  for (int i = 0; i < 2; i++) r->d[i].pr = r->d[i].pw = -1;
  r->pipes_open = 1;
  for (int i = 0; i < 2; i++) {
    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) {
      e = -errno;
      splice_close_pipes(r);
      free(r);
      return num(env, e);
    }
    r->d[i].pr = p[0];
    r->d[i].pw = p[1];
    int cap = fcntl(p[1], F_GETPIPE_SZ);
    r->d[i].cap = cap > 0 ? (size_t)cap : PIPE_CAP_FALLBACK;
    r->d[i].src = r->fd[i];
    r->d[i].dst = r->fd[1 - i];
  }
  r->tags[0].r = r->tags[1].r = r;
  r->tags[0].side = 0;
  r->tags[1].side = 1;
  r->last_ms = splice_now_ms();
  r->slot = st->free_top > 0 ? st->free_slots[--st->free_top] : st->next_fresh++;
  st->slots[r->slot] = r;
  st->live++;
  e = enqueue(st, CMD_ADD, r->slot, r);
  if (e) {
    free_relay(st, r);
    return num(env, e);
  }
  if (st->live == 1) napi_ref_threadsafe_function(env, st->tsfn);
  return num(env, r->slot);
}

static relay_t *relay_arg(napi_env env, napi_value v, state_t **stp) {
  int32_t slot;
  state_t *st = get_state(env);
  if (!st || !get_int(env, v, &slot) || slot < 0 || slot >= MAX_RELAYS) return NULL;
  *stp = st;
  return st->slots[slot];
}

/* spliceCancel(slot): ask the worker to stop the relay (reported as cancelled unless it ended first). */
static napi_value js_cancel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  state_t *st = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return num(env, -EINVAL);
  relay_t *r = relay_arg(env, argv[0], &st);
  if (!r) return num(env, -ENOENT);
  return num(env, enqueue(st, CMD_CANCEL, r->slot, NULL));
}

/*
 * spliceInfo(slot, Float64Array(3 or more)): [bytes fd0->fd1, bytes fd1->fd0, ms since bytes
 * last moved, and with room for them: pipe capacity fd0->fd1, pipe capacity fd1->fd0].
 */
static napi_value js_info(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  state_t *st = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) return num(env, -EINVAL);
  relay_t *r = relay_arg(env, argv[0], &st);
  if (!r) return num(env, -ENOENT);
  bool is_ta = false;
  if (napi_is_typedarray(env, argv[1], &is_ta) != napi_ok || !is_ta) return num(env, -EINVAL);
  napi_typedarray_type type;
  size_t len;
  void *data;
  if (napi_get_typedarray_info(env, argv[1], &type, &len, &data, NULL, NULL) != napi_ok || type != napi_float64_array || len < 3) {
    return num(env, -EINVAL);
  }
  double *out = data;
  out[0] = (double)__atomic_load_n(&r->moved[0], __ATOMIC_RELAXED);
  out[1] = (double)__atomic_load_n(&r->moved[1], __ATOMIC_RELAXED);
  int64_t idle = splice_now_ms() - __atomic_load_n(&r->last_ms, __ATOMIC_RELAXED);
  out[2] = idle > 0 ? (double)idle : 0;
  if (len >= 5) {
    out[3] = (double)__atomic_load_n(&r->d[0].cap, __ATOMIC_RELAXED);
    out[4] = (double)__atomic_load_n(&r->d[1].cap, __ATOMIC_RELAXED);
  }
  return num(env, 0);
}

/*
 * spliceLimits(growMax, growBudget): the pipe growth of relays from now on (splice_internal.h):
 * the size in bytes a busy direction's pipe may grow to (0: never grow), and the bytes of
 * growth all pipes of the process may use together. 0, -EINVAL (not integers, negative, above
 * PIPE_GROW_MAX_LIMIT / PIPE_GROW_BUDGET_LIMIT) or -ENOTCONN (spliceInit not called).
 */
static napi_value js_limits(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) return num(env, -EINVAL);
  double v[2];
  for (int i = 0; i < 2; i++) {
    napi_valuetype t;
    if (napi_typeof(env, argv[i], &t) != napi_ok || t != napi_number) return num(env, -EINVAL);
    if (napi_get_value_double(env, argv[i], &v[i]) != napi_ok) return num(env, -EINVAL);
    /* range first (rejects NaN and infinities: no cast of those), then whole numbers only */
    double max = i == 0 ? (double)PIPE_GROW_MAX_LIMIT : (double)PIPE_GROW_BUDGET_LIMIT;
    if (!(v[i] >= 0 && v[i] <= max) || v[i] != (double)(int64_t)v[i]) return num(env, -EINVAL);
  }
  state_t *st = get_state(env);
  if (!st) return num(env, -ENOTCONN);
  __atomic_store_n(&st->grow_max, (int32_t)v[0], __ATOMIC_RELAXED);
  __atomic_store_n(&st->grow_budget, (int64_t)v[1], __ATOMIC_RELAXED);
  return num(env, 0);
}

/* spliceLive(): relays taken over and not yet reported to JS. */
static napi_value js_live(napi_env env, napi_callback_info info) {
  (void)info;
  state_t *st = get_state(env);
  return num(env, st ? st->live : 0);
}

void brook_splice_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"spliceInit", NULL, js_init, NULL, NULL, NULL, napi_default, NULL},
    {"spliceStart", NULL, js_start, NULL, NULL, NULL, napi_default, NULL},
    {"spliceCancel", NULL, js_cancel, NULL, NULL, NULL, napi_default, NULL},
    {"spliceInfo", NULL, js_info, NULL, NULL, NULL, napi_default, NULL},
    {"spliceLive", NULL, js_live, NULL, NULL, NULL, napi_default, NULL},
    {"spliceLimits", NULL, js_limits, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  napi_value yes;
  napi_get_boolean(env, true, &yes);
  napi_set_named_property(env, exports, "spliceSupported", yes);
}

#else /* not Linux: no splice(2); JS relays in JS */

void brook_splice_register(napi_env env, napi_value exports) {
  napi_value no;
  napi_get_boolean(env, false, &no);
  napi_set_named_property(env, exports, "spliceSupported", no);
}

#endif
