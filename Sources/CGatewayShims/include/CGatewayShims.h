#ifndef C_GATEWAY_SHIMS_H
#define C_GATEWAY_SHIMS_H

#include <sys/types.h>
#include <signal.h>
#include <stdint.h>

/// memfd_create(2) with MFD_CLOEXEC | MFD_ALLOW_SEALING.
int gw_memfd_create(const char *name);

/// prctl(PR_SET_PDEATHSIG, sig).
int gw_set_parent_death_signal(int sig);

/// prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).
int gw_set_no_new_privs(void);

/// prctl(PR_SET_NAME, name) — shows in ps/top as the thread name.
int gw_set_process_name(const char *name);

/// posix_spawn with:
///  - `fd_count` pairs (`from_fds[i]` → `to_fds[i]`) duplicated into the child (close-on-exec
///    on the source does not matter: dup2 clears it on the target);
///  - every other descriptor from `close_from` upwards closed in the child;
///  - every signal reset to its default disposition and an empty signal mask.
/// Returns 0 and stores the child's pid, or an errno value.
int gw_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[],
             const int *from_fds, const int *to_fds, int fd_count, int close_from);

/// The calling process's signal mask set to block exactly the signals in `set`
/// (all threads created afterwards inherit it).
int gw_block_signals(const sigset_t *set);

/// prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0).
int gw_clear_ambient_capabilities(void);

/// fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL).
int gw_seal_memfd(int fd);

/// fcntl(fd, F_SETFD, FD_CLOEXEC).
int gw_set_cloexec(int fd);

/// fcntl(fd, F_DUPFD_CLOEXEC, minimum): a close-on-exec copy numbered at least `minimum`.
int gw_dup_above(int fd, int minimum);

/// An eventfd (close-on-exec, non-blocking) for waking a thread blocked in epoll_wait.
int gw_eventfd(void);

/// Adds 1 to an eventfd's counter (wakes its epoll waiters).
int gw_eventfd_signal(int fd);

/// An epoll set (close-on-exec) for a worker's accept waiter: `listener` with
/// EPOLLIN | EPOLLEXCLUSIVE — the kernel wakes one of the sets waiting on it per new
/// connection, not all of them — and `wake_fd` with EPOLLIN. Returns the descriptor or -1.
int gw_accept_waiter_create(int listener, int wake_fd);

/// Blocks in epoll_wait on an accept waiter's set, at most `timeout_ms`: 1 when its
/// listener is readable, 0 when only the wake descriptor is (or the wait was interrupted),
/// -1 on another error (errno). When the time runs out it asks the listener itself
/// (poll, no wait), so a connection whose wake-up went to a worker that cannot take it
/// (its loop hangs) is still found: 1 if one is queued, else 0.
int gw_accept_waiter_wait(int epoll_fd, int listener, int timeout_ms);

/// fcntl(fd, F_SETFL, flags | O_NONBLOCK). On a socket shared between processes this sets
/// the flag for all of them (it belongs to the open file description).
int gw_set_nonblocking(int fd);

/// accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC): returns -1 with EAGAIN
/// when no connection is queued only if `listener` is non-blocking.
int gw_accept_nonblocking(int listener);

/// FUTEX_WAIT (shared, not private: the word may sit in memory several processes map):
/// sleeps while `*word == expected`, at most `timeout_ns`. Returns 0 when woken, -1 with
/// errno EAGAIN (the word differed), ETIMEDOUT or EINTR.
int gw_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns);

/// FUTEX_WAKE of every process and thread sleeping on `word`.
int gw_futex_wake_all(uint32_t *word);

/// glibc's `memmem` (a GNU extension the Swift Glibc module does not show): where `needle`
/// first occurs in `haystack`, or NULL.
const void *gw_memmem(const void *haystack, size_t haystack_length, const void *needle, size_t needle_length);

#endif
