/// Sent through every connection's pipeline when the worker's drain timeout ends.
struct DrainDeadlineReached {}
