import HTTP1
import Shared

/// A client's request head as the worker parses it: its route is one of the gateway's,
/// matched once while the head is parsed.
typealias RequestHead = HTTP1.RequestHead<Route>

extension Route: RequestRoute {}
