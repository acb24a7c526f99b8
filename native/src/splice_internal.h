/*
 * Shared between the two halves of the zero-copy relay (Linux only):
 *   splice_relay.c   the N-API side (main thread): spliceInit/Start/Cancel/Info/Live/Limits,
 *                    the reports to JS, the environment's cleanup;
 *   splice_worker.c  the worker thread: one epoll loop over every spliced relay.
 * The ownership rules and the relay's life are described at the top of splice_relay.c.
 */
#ifndef BROOK_SPLICE_INTERNAL_H
#define BROOK_SPLICE_INTERNAL_H

#if defined(__linux__)
/* (the including file defines _GNU_SOURCE before any header) */
#include <node_api.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Relays spliced at once; beyond this spliceStart answers -EAGAIN and JS relays in JS. */
#define MAX_RELAYS 16384
/* Events taken per epoll_wait. */
#define EVENTS_PER_WAIT 128
/* Rounds (each: both directions, read then write) one relay gets per wakeup before the others. */
#define SPLICE_ROUNDS 16
/* What each spliced chunk asks the kernel for at most (the pipe bounds it anyway). */
#define SPLICE_MAX_CHUNK (1u << 20)
/* A pipe's capacity when the kernel does not say (F_GETPIPE_SZ refused): one page. */
#define PIPE_CAP_FALLBACK 4096
/*
 * Pipe growth. Every pipe starts at the kernel's default size (64 KiB: 16 pages), so 1,000 idle
 * tunnels cost what they always did. A direction whose pipe fills up (a bulk transfer) asks once
 * for a bigger pipe (F_SETPIPE_SZ) up to PIPE_GROW_MAX_DEFAULT, Go's size for the same relay
 * (internal/poll: maxSpliceSize, 1 MiB): each splice then moves up to 16 times more per system
 * call. The growth of all pipes of the process together stays within PIPE_GROW_BUDGET_DEFAULT;
 * beyond it, and whenever the kernel refuses (EPERM past fs.pipe-user-pages-soft or
 * fs.pipe-max-size for an unprivileged user, ENOMEM), the pipe quietly keeps its size.
 * Both limits can be changed with spliceLimits (up to PIPE_GROW_MAX_LIMIT / PIPE_GROW_BUDGET_LIMIT).
 */
#define PIPE_GROW_MAX_DEFAULT (1 << 20)
#define PIPE_GROW_BUDGET_DEFAULT (64ll << 20)
#define PIPE_GROW_MAX_LIMIT (16 << 20)
#define PIPE_GROW_BUDGET_LIMIT (1ll << 40)

enum { KIND_DONE = 0, KIND_ABORT = 1, KIND_CANCELLED = 2, KIND_REFUSED = 3 };
enum { CMD_ADD = 1, CMD_CANCEL = 2 };

typedef struct relay relay_t;

/* One direction: src --splice--> pipe --splice--> dst. */
typedef struct {
  int src, dst;  /* socket descriptors (JS's) */
  int pr, pw;    /* pipe read / write ends (ours) */
  size_t inpipe; /* bytes in the pipe */
  size_t cap;    /* the pipe's capacity (atomic: spliceInfo reads it) */
  size_t grown;  /* bytes of cap counted against the growth budget */
  int grow_tried;
  int eof;  /* src read EOF */
  int shut; /* dst write half shut */
} dir_t;

typedef struct {
  relay_t *r;
  int side;
} tag_t;

struct relay {
  uint32_t slot;
  int fd[2];
  dir_t d[2]; /* d[i]: fd[i] -> fd[1 - i] */
  int pipes_open;
  int registered[2];
  tag_t tags[2];
  /* written by the worker, read by the main thread (atomics) */
  uint64_t moved[2];
  int64_t last_ms;
  /* worker-only */
  int can_read[2];  /* fd[i] may have bytes (or EOF) to take: cleared on EAGAIN, set by epoll */
  int can_write[2]; /* fd[i] may take bytes: cleared on EAGAIN, set by epoll */
  int dead;
  int in_ready;
  relay_t *rprev, *rnext; /* ready list */
  relay_t *done_next;     /* reports to post after this batch */
  int kind, err;
};

typedef struct cmd {
  int type;
  uint32_t slot;
  relay_t *r;
  struct cmd *next;
} cmd_t;

typedef struct {
  napi_env env;
  int ep, wake;
  pthread_t thread;
  pthread_mutex_t mu;
  cmd_t *cmd_head, *cmd_tail; /* under mu */
  int stopping;               /* under mu */
  int broken;                 /* atomic: the worker gave up (epoll failed) */
  napi_threadsafe_function tsfn;
  /* set by the main thread, read by the worker (atomics) */
  int32_t grow_max;
  int64_t grow_budget;
  /* main thread only */
  relay_t **slots;
  uint32_t *free_slots;
  uint32_t free_top, next_fresh, live;
  /* worker only */
  relay_t **active;
  relay_t *ready_head;
  relay_t *done_head;
  int64_t grow_used; /* pipe growth in use, bytes */
} state_t;

int64_t splice_now_ms(void);
void splice_close_fd(int fd);
void splice_close_pipes(relay_t *r);
/* The worker thread's body (arg: the state_t). */
void *splice_worker(void *arg);

#endif /* __linux__ */
#endif
