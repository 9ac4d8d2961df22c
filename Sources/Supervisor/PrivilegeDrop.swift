import CGatewayShims
import CLibcap
import Shared

#if canImport(Glibc)
    @preconcurrency import Glibc
#endif

/// Gives up everything a root start had, once the socket is bound: the capability
/// bounding set, the user (to `--user`), every capability set, and the right to gain
/// privileges again (`no_new_privs`). Workers spawned afterwards inherit the result.
enum PrivilegeDrop {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// What was done, for the start-up log.
    struct Outcome {
        var uid: uid_t
        var gid: gid_t
        var switchedUser: Bool
    }

    static func perform(user: String?) throws -> Outcome {
        var switched = false
        if geteuid() == 0 {
            var target: (uid_t, gid_t)?
            if let user {
                guard let entry = getpwnam(user) else {
                    throw Failure(description: "--user \(user): no such user")
                }
                target = (entry.pointee.pw_uid, entry.pointee.pw_gid)
            }
            // The bounding set can only be dropped while CAP_SETPCAP is still held.
            var cap: cap_value_t = 0
            while cap_get_bound(cap) >= 0 {
                if cap_drop_bound(cap) != 0 {
                    throw Failure(description: "cannot drop capability \(cap) from the bounding set: \(errnoText())")
                }
                cap += 1
            }
            if let (uid, gid) = target {
                var groups = [gid]
                guard setgroups(1, &groups) == 0 else { throw Failure(description: "setgroups: \(errnoText())") }
                guard setgid(gid) == 0 else { throw Failure(description: "setgid(\(gid)): \(errnoText())") }
                guard setuid(uid) == 0 else { throw Failure(description: "setuid(\(uid)): \(errnoText())") }
                guard setuid(0) != 0 else { throw Failure(description: "still able to regain root after setuid") }
                switched = true
            }
        }
        _ = gw_clear_ambient_capabilities()
        guard let empty = cap_init() else { throw Failure(description: "cap_init: \(errnoText())") }
        defer { cap_free(UnsafeMutableRawPointer(empty)) }
        // Started without capabilities (e.g. systemd's User= with a seccomp filter that
        // forbids capset): nothing to clear, and asking would fail.
        if let current = cap_get_proc() {
            defer { cap_free(UnsafeMutableRawPointer(current)) }
            if cap_compare(current, empty) != 0, cap_set_proc(empty) != 0 {
                throw Failure(description: "cannot clear capabilities: \(errnoText())")
            }
        }
        guard gw_set_no_new_privs() == 0 else { throw Failure(description: "cannot set no_new_privs: \(errnoText())") }
        return Outcome(uid: getuid(), gid: getgid(), switchedUser: switched)
    }
}
