/*
 * The splice relay's worker thread: ONE per process (per Node environment), an epoll loop over
 * every spliced relay. Ownership, reports and half-close: the top of splice_relay.c.
 *
 *   fd[0] --splice--> pipe d[0] --splice--> fd[1]        (direction 0: "up")
 *   fd[0] <--splice-- pipe d[1] <--splice-- fd[1]        (direction 1: "down")
 *
 * Readiness: both sockets are registered edge-triggered (EPOLLET). Each socket carries two
 * flags, can_read and can_write: set by its epoll events, cleared when a splice answers EAGAIN
 * (for reading: only with an empty pipe, see fill). A splice is only tried while its flag is set, so a relay moving bytes one way never spends a
 * system call on the quiet way (each EAGAIN used to cost one per round), and a full destination
 * is not retried until it reports room again. An edge that comes after the EAGAIN sets the flag
 * again (the event is queued from the moment the socket changes), so nothing is missed.
 *
 * Pipe growth (sizes in splice_internal.h): a direction whose pipe filled up asks once for a
 * bigger pipe, within the process's growth budget; a refusal is quiet (the pipe keeps its size).
 */
#define _GNU_SOURCE
#include "splice_internal.h"

#if defined(__linux__)
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int64_t splice_now_ms(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0;
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void splice_close_fd(int fd) {
  /* Linux: the descriptor is released even when close reports EINTR; never retry */
  if (fd >= 0) (void)close(fd);
}

void splice_close_pipes(relay_t *r) {
  if (!r->pipes_open) return;
  for (int i = 0; i < 2; i++) {
    splice_close_fd(r->d[i].pr);
    splice_close_fd(r->d[i].pw);
    r->d[i].pr = r->d[i].pw = -1;
  }
  r->pipes_open = 0;
}

static void ready_add(state_t *st, relay_t *r) {
  if (r->in_ready) return;
  r->in_ready = 1;
  r->rprev = NULL;
  r->rnext = st->ready_head;
  if (st->ready_head) st->ready_head->rprev = r;
  st->ready_head = r;
}

static void ready_remove(state_t *st, relay_t *r) {
  if (!r->in_ready) return;
  r->in_ready = 0;
  if (r->rprev) r->rprev->rnext = r->rnext;
  else st->ready_head = r->rnext;
  if (r->rnext) r->rnext->rprev = r->rprev;
  r->rprev = r->rnext = NULL;
}

/* Stop using the relay's descriptors for good, and queue its report. */
static void teardown(state_t *st, relay_t *r, int kind, int err) {
  if (r->dead) return;
  r->dead = 1;
  r->kind = kind;
  r->err = err;
  ready_remove(st, r);
  for (int i = 0; i < 2; i++) {
    if (r->registered[i]) {
      /* cannot fail while JS keeps the socket open (it does until the report) */
      (void)epoll_ctl(st->ep, EPOLL_CTL_DEL, r->fd[i], NULL);
      r->registered[i] = 0;
    }
    st->grow_used -= (int64_t)r->d[i].grown;
    r->d[i].grown = 0;
  }
  splice_close_pipes(r);
  if (st->active[r->slot] == r) st->active[r->slot] = NULL;
  r->done_next = st->done_head;
  st->done_head = r;
}

static void post_reports(state_t *st) {
  relay_t *r = st->done_head;
  st->done_head = NULL;
  while (r) {
    relay_t *next = r->done_next;
    /* unlimited queue: never blocks; napi_closing only at teardown (the relay is freed there) */
    (void)napi_call_threadsafe_function(st->tsfn, r, napi_tsfn_nonblocking);
    r = next;
  }
}

/* The direction's pipe is full: ask once for a bigger one, within the budget (quiet refusal). */
static void grow_pipe(state_t *st, dir_t *d) {
  d->grow_tried = 1;
  int64_t max = __atomic_load_n(&st->grow_max, __ATOMIC_RELAXED);
  int64_t budget = __atomic_load_n(&st->grow_budget, __ATOMIC_RELAXED);
  if (max <= (int64_t)d->cap) return;
  if (st->grow_used + (max - (int64_t)d->cap) > budget) return;
  int got = fcntl(d->pw, F_SETPIPE_SZ, (int)max);
  if (got <= 0 || (size_t)got <= d->cap) return; /* EPERM, ENOMEM, ...: keep the size */
  size_t more = (size_t)got - d->cap;
  st->grow_used += (int64_t)more;
  d->grown += more;
  __atomic_store_n(&d->cap, (size_t)got, __ATOMIC_RELAXED);
}

/* Socket -> pipe. >0 progress, 0 none, <0 -errno (abort). */
static int fill(state_t *st, relay_t *r, int i) {
  dir_t *d = &r->d[i];
  if (d->eof || !r->can_read[i] || d->inpipe >= d->cap) return 0;
  size_t want = d->cap - d->inpipe;
  if (want > SPLICE_MAX_CHUNK) want = SPLICE_MAX_CHUNK;
  ssize_t n = splice(d->src, NULL, d->pw, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  if (n > 0) {
    d->inpipe += (size_t)n;
    __atomic_add_fetch(&r->moved[i], (uint64_t)n, __ATOMIC_RELAXED);
    if (d->inpipe >= d->cap && !d->grow_tried) grow_pipe(st, d);
    return 1;
  }
  if (n == 0) {
    d->eof = 1;
    /* our write half toward src still open: an RST reported as EOF leaves no peer name */
    if (!r->d[1 - i].shut) {
      struct sockaddr_storage ss;
      socklen_t len = sizeof ss;
      if (getpeername(d->src, (struct sockaddr *)&ss, &len) != 0 && errno == ENOTCONN) return -ECONNRESET;
    }
    return 1;
  }
  if (errno == EINTR) return 1;
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    /* with bytes in the pipe, EAGAIN may mean its slots are full (a slot holds one page
       fragment, often less than a page): try again once the pipe is empty, which no edge
       would announce; an empty pipe's EAGAIN means the socket has nothing */
    if (d->inpipe == 0) r->can_read[i] = 0;
    return 0;
  }
  return -errno;
}

/* Pipe -> socket. >0 progress, 0 none, <0 -errno (abort). */
static int drain(relay_t *r, int i) {
  dir_t *d = &r->d[i];
  int out = 1 - i;
  if (d->inpipe == 0 || !r->can_write[out]) return 0;
  ssize_t n = splice(d->pr, NULL, d->dst, NULL, d->inpipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  if (n > 0) {
    d->inpipe -= (size_t)n;
    return 1;
  }
  if (n == 0) return -EIO; /* a pipe with bytes in it cannot be empty */
  if (errno == EINTR) return 1;
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    r->can_write[out] = 0;
    return 0;
  }
  return -errno;
}

/* One step of one direction: >0 progress, 0 none (waiting on an edge), <0 -errno (abort). */
static int step(state_t *st, relay_t *r, int i) {
  dir_t *d = &r->d[i];
  int a = fill(st, r, i);
  if (a < 0) return a;
  int b = drain(r, i);
  if (b < 0) return b;
  int progress = a | b;
  if (d->eof && d->inpipe == 0 && !d->shut) {
    d->shut = 1;
    progress = 1;
    if (shutdown(d->dst, SHUT_WR) != 0) return -errno;
  }
  return progress;
}

static void pump(state_t *st, relay_t *r) {
  if (r->dead) return;
  int any = 0;
  for (int round = 0; round < SPLICE_ROUNDS; round++) {
    int progress = 0;
    for (int i = 0; i < 2; i++) {
      int p = step(st, r, i);
      if (p < 0) {
        teardown(st, r, KIND_ABORT, -p);
        return;
      }
      progress |= p;
    }
    if (r->d[0].shut && r->d[1].shut) {
      __atomic_store_n(&r->last_ms, splice_now_ms(), __ATOMIC_RELAXED);
      teardown(st, r, KIND_DONE, 0);
      return;
    }
    if (!progress) {
      if (any) __atomic_store_n(&r->last_ms, splice_now_ms(), __ATOMIC_RELAXED);
      ready_remove(st, r);
      return;
    }
    any = 1;
  }
  /* still moving after its share: run again after the others (epoll_wait with timeout 0) */
  __atomic_store_n(&r->last_ms, splice_now_ms(), __ATOMIC_RELAXED);
  ready_add(st, r);
}

static void activate(state_t *st, relay_t *r) {
  st->active[r->slot] = r;
  for (int i = 0; i < 2; i++) {
    /* unknown until tried: the first pump tries every splice once */
    r->can_read[i] = r->can_write[i] = 1;
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = &r->tags[i];
    if (epoll_ctl(st->ep, EPOLL_CTL_ADD, r->fd[i], &ev) != 0) {
      /* nothing moved yet: JS relays it itself */
      teardown(st, r, KIND_REFUSED, errno);
      return;
    }
    r->registered[i] = 1;
  }
  pump(st, r); /* bytes may be waiting already: edges before the ADD are not reported */
}

/* Take the queued commands; returns 1 when the worker must stop. */
static int run_commands(state_t *st) {
  if (pthread_mutex_lock(&st->mu) != 0) return 1;
  cmd_t *c = st->cmd_head;
  st->cmd_head = st->cmd_tail = NULL;
  int stopping = st->stopping;
  pthread_mutex_unlock(&st->mu);
  while (c) {
    cmd_t *next = c->next;
    if (!stopping) {
      if (c->type == CMD_ADD) activate(st, c->r);
      else if (c->type == CMD_CANCEL && c->slot < MAX_RELAYS && st->active[c->slot]) {
        teardown(st, st->active[c->slot], KIND_CANCELLED, 0);
      }
    }
    free(c);
    c = next;
  }
  return stopping;
}

static void drain_wake(state_t *st) {
  uint64_t v;
  for (;;) {
    ssize_t n = read(st->wake, &v, sizeof v);
    if (n >= 0 || errno != EINTR) break;
  }
}

static void stop_all(state_t *st) {
  for (uint32_t s = 0; s < MAX_RELAYS; s++) {
    relay_t *r = st->active[s];
    if (r) teardown(st, r, KIND_CANCELLED, 0);
  }
  st->done_head = NULL; /* no reports at teardown: the environment is going away */
}

/* An event on one of a relay's sockets: note what it may do now, then move bytes. */
static void on_event(state_t *st, relay_t *r, int side, uint32_t events) {
  if (events & EPOLLERR) {
    int e = 0;
    socklen_t len = sizeof e;
    if (getsockopt(r->fd[side], SOL_SOCKET, SO_ERROR, &e, &len) != 0) e = errno;
    if (e != 0) {
      teardown(st, r, KIND_ABORT, e);
      return;
    }
  }
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) r->can_read[side] = 1;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) r->can_write[side] = 1;
  pump(st, r);
}

void *splice_worker(void *arg) {
  state_t *st = arg;
  struct epoll_event evs[EVENTS_PER_WAIT];
  for (;;) {
    int n = epoll_wait(st->ep, evs, EVENTS_PER_WAIT, st->ready_head ? 0 : -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      /* cannot happen with a valid epoll descriptor: abort every relay, refuse new ones */
      int e = errno;
      __atomic_store_n(&st->broken, 1, __ATOMIC_RELEASE);
      for (uint32_t s = 0; s < MAX_RELAYS; s++) {
        if (st->active[s]) teardown(st, st->active[s], KIND_ABORT, e);
      }
      post_reports(st);
      return NULL;
    }
    /* reset the wake-up counter BEFORE taking the commands: a command queued after this read
       writes the counter again (the next epoll_wait returns at once), one queued before it is
       taken now; draining after taking them could swallow the wake-up of a later command */
    for (int k = 0; k < n; k++) {
      if (evs[k].data.ptr == NULL) drain_wake(st);
    }
    if (run_commands(st)) {
      stop_all(st);
      return NULL;
    }
    for (int k = 0; k < n; k++) {
      if (evs[k].data.ptr == NULL) continue;
      tag_t *t = evs[k].data.ptr;
      /* a relay torn down earlier in this batch is still allocated (not yet reported) */
      if (!t->r->dead) on_event(st, t->r, t->side, evs[k].events);
    }
    /* relays that used up their rounds: one more share each */
    relay_t *list = st->ready_head;
    st->ready_head = NULL;
    while (list) {
      relay_t *r = list;
      list = r->rnext;
      r->in_ready = 0;
      r->rprev = r->rnext = NULL;
      pump(st, r);
    }
    post_reports(st);
  }
}

#endif /* __linux__ */
