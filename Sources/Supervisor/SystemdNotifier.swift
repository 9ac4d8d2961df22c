import CGatewayShims
import CSystemd

#if canImport(Glibc)
    @preconcurrency import Glibc
#endif

/// `sd_notify` to the service manager; a no-op when `NOTIFY_SOCKET` is not set.
struct SystemdNotifier {
    /// Half of `WATCHDOG_USEC` in seconds when systemd asked this process for keep-alives.
    let watchdogInterval: Double?

    init() {
        var usec: UInt64 = 0
        if sd_watchdog_enabled(0, &usec) > 0, usec > 0 {
            watchdogInterval = Double(usec) / 2e6
        } else {
            watchdogInterval = nil
        }
    }

    func notify(_ state: String) {
        var message = state
        if state.hasPrefix("RELOADING=1") {
            // systemd ≥ 253 wants the reload's start time with it.
            var ts = timespec()
            clock_gettime(CLOCK_MONOTONIC, &ts)
            message += "\nMONOTONIC_USEC=\(UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000)"
        }
        _ = sd_notify(0, message)
    }
}
