#define _GNU_SOURCE  // memfd_create, memmem

#include "CGatewayShims.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <spawn.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int gw_memfd_create(const char *name) {
    return memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
}

int gw_set_parent_death_signal(int sig) {
    return prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0);
}

int gw_set_no_new_privs(void) {
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

int gw_set_process_name(const char *name) {
    return prctl(PR_SET_NAME, name, 0, 0, 0);
}

int gw_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[],
             const int *from_fds, const int *to_fds, int fd_count, int close_from) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc != 0) return rc;
    rc = posix_spawnattr_init(&attr);
    if (rc != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return rc;
    }
    for (int i = 0; i < fd_count && rc == 0; i++) {
        rc = posix_spawn_file_actions_adddup2(&actions, from_fds[i], to_fds[i]);
    }
    if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions, close_from);

    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr, &all);
    if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &none);
    if (rc == 0) rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    if (rc == 0) rc = posix_spawn(pid, path, &actions, &attr, argv, envp);

    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    return rc;
}

int gw_block_signals(const sigset_t *set) {
    return pthread_sigmask(SIG_SETMASK, set, NULL);
}

int gw_clear_ambient_capabilities(void) {
    return prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
}

int gw_seal_memfd(int fd) {
    return fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
}

int gw_set_cloexec(int fd) {
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

int gw_dup_above(int fd, int minimum) {
    return fcntl(fd, F_DUPFD_CLOEXEC, minimum);
}

int gw_eventfd(void) {
    return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

int gw_eventfd_signal(int fd) {
    uint64_t one = 1;
    return write(fd, &one, sizeof one) == sizeof one ? 0 : -1;
}

int gw_accept_waiter_create(int listener, int wake_fd) {
    int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd < 0) return -1;
    struct epoll_event listen_event = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.fd = listener};
    struct epoll_event wake_event = {.events = EPOLLIN, .data.fd = wake_fd};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listener, &listen_event) != 0
        || epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wake_fd, &wake_event) != 0) {
        int saved = errno;
        close(epoll_fd);
        errno = saved;
        return -1;
    }
    return epoll_fd;
}

int gw_accept_waiter_wait(int epoll_fd, int listener, int timeout_ms) {
    struct epoll_event events[2];
    int n = epoll_wait(epoll_fd, events, 2, timeout_ms);
    if (n < 0) return errno == EINTR ? 0 : -1;
    if (n == 0) {
        struct pollfd probe = {.fd = listener, .events = POLLIN};
        return poll(&probe, 1, 0) == 1 && (probe.revents & POLLIN) ? 1 : 0;
    }
    for (int i = 0; i < n; i++) {
        if (events[i].data.fd == listener) return 1;
    }
    return 0;
}

int gw_set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    return (flags & O_NONBLOCK) ? 0 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int gw_accept_nonblocking(int listener) {
    return accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

int gw_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns) {
    struct timespec timeout = {.tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000};
    return (int)syscall(SYS_futex, word, FUTEX_WAIT, expected, &timeout, NULL, 0);
}

int gw_futex_wake_all(uint32_t *word) {
    return (int)syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

const void *gw_memmem(const void *haystack, size_t haystack_length, const void *needle, size_t needle_length) {
    return memmem(haystack, haystack_length, needle, needle_length);
}
