//! What decides: dedup, routing, grouping, inhibition, silences and flood control. Plain state over alerts
//! with time as a parameter, no I/O, so each is tested on timelines. The router applies them in order and
//! commits what they decide; nothing here knows how a notice is sent.

pub(crate) mod dedup;
pub(crate) mod flood;
pub(crate) mod group;
pub(crate) mod inhibit;
pub(crate) mod route;
pub(crate) mod silence;
