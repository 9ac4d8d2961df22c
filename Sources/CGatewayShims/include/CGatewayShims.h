#ifndef C_GATEWAY_SHIMS_H
#define C_GATEWAY_SHIMS_H

#include <sys/types.h>
#include <signal.h>

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

#endif
