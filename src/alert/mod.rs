//! Alert router (see issue: dedup, inhibit, silence, group, route, outbox, notifiers).
