//! Claiming a notice before it is sent, so that routers sharing the work page each target once.
//!
//! Each router decides notices from its own state, and the events of one incident may reach different
//! routers, which may also group differently. So what is claimed is not a notice but each incident it
//! tells about, per receiver, channel and target: "firing", "resolved", or "repeat-N" (the N-th
//! `repeat_interval` since the incident began). A delivery sends only the incidents it won, re-rendered
//! without the others, and is recorded as suppressed when none are left. Claims are made by the notifier
//! just before sending; [`LocalClaims`] (one router, `streetwatch run`) wins every one.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

use sha2::{Digest, Sha256};

use super::model::{NoticeKind, NoticePayload};

/// What became of one claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claimed {
    /// This router holds it (it created the key now, or before a restart): it may send.
    Won,
    /// Another router holds it: the name it wrote.
    Held(String),
}

/// The claim store could not be asked (NATS away): the delivery waits and tries again, never sent unclaimed.
#[derive(Debug, thiserror::Error)]
#[error("cannot claim the notice: {0}")]
pub struct ClaimError(pub String);

pub type ClaimFuture<'a> = Pin<Box<dyn Future<Output = Result<Claimed, ClaimError>> + Send + 'a>>;

/// Where claims are made: cluster-wide (compare-and-set on "no such key") or, alone, nowhere.
pub trait Claims: Send + Sync {
    /// Claims `key` for this router; a key this router already holds is won again (a resend after a crash).
    fn claim<'a>(&'a self, key: &'a str) -> ClaimFuture<'a>;
}

/// A router alone: every claim is won.
pub struct LocalClaims;

impl Claims for LocalClaims {
    fn claim<'a>(&'a self, _key: &'a str) -> ClaimFuture<'a> {
        Box::pin(std::future::ready(Ok(Claimed::Won)))
    }
}

/// The delivery a claim is about: who receives it, how, and where.
pub(crate) struct Target<'a> {
    pub receiver: &'a str,
    pub channel: &'a str,
    pub target: &'a str,
}

/// One incident of a notice and the key that claims telling it to a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claim {
    pub incident: String,
    pub key: String,
}

/// The claims a delivery of `payload` needs: one per incident it tells about. A flood summary reports this
/// router's own held notices and claims nothing.
pub(crate) fn claims_for(payload: &NoticePayload, to: &Target<'_>) -> Vec<Claim> {
    if payload.kind != NoticeKind::Alerts {
        return Vec::new();
    }
    let firing = payload.firing.iter().map(|a| {
        let topic = match payload.repeats.get(&a.key) {
            Some(n) => format!("repeat-{n}"),
            None => "firing".to_string(),
        };
        (a.key.clone(), topic)
    });
    let resolved = payload
        .resolved
        .iter()
        .map(|a| (a.key.clone(), "resolved".to_string()));
    firing
        .chain(resolved)
        .map(|(incident, topic)| Claim {
            key: claim_key(to, &topic, &incident),
            incident,
        })
        .collect()
}

/// A KV key (`[-/_=.a-zA-Z0-9]`, short) naming what is told to whom: a hash, as targets and incident ids
/// may hold any character.
fn claim_key(to: &Target<'_>, topic: &str, incident: &str) -> String {
    let mut h = Sha256::new();
    for part in [to.receiver, to.channel, to.target, topic, incident] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    format!("notice.{}", hex::encode(&h.finalize()[..16]))
}

/// What a delivery does once its claims are answered.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Every incident won (or none to claim): send as decided.
    Send,
    /// Some won: send this narrower notice (re-rendered) instead.
    Narrowed(NoticePayload),
    /// None won: record the delivery as a duplicate, naming who holds the claims.
    Suppressed(String),
}

/// Applies claim results (`won`: incidents this router may tell; `holders`: who holds the others).
pub(crate) fn verdict(
    payload: &NoticePayload,
    claims: &[Claim],
    won: &BTreeSet<String>,
    holders: &BTreeSet<String>,
) -> Verdict {
    if claims.iter().all(|c| won.contains(&c.incident)) {
        return Verdict::Send;
    }
    if won.is_empty() {
        let by: Vec<&str> = holders.iter().map(String::as_str).collect();
        return Verdict::Suppressed(format!("duplicate: claimed by {}", by.join(", ")));
    }
    let mut narrow = payload.clone();
    narrow.firing.retain(|a| won.contains(&a.key));
    narrow.resolved.retain(|a| won.contains(&a.key));
    narrow.repeats.retain(|k, _| won.contains(k));
    Verdict::Narrowed(narrow)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Mutex;

    use super::*;
    use crate::alert::model::Alert;
    use crate::types::{Severity, Timestamp};

    fn alert(key: &str, ended: bool) -> Alert {
        Alert {
            key: key.into(),
            camera: "c".into(),
            camera_name: "C".into(),
            ward: "W".into(),
            rule: "r".into(),
            zone: "z".into(),
            kind: "crowding".into(),
            severity: Severity::Warning,
            started_at: Timestamp(0),
            updated_at: Timestamp(0),
            ended_at: ended.then_some(Timestamp(1)),
            summary: String::new(),
            count: 1,
            snapshot: None,
            snapshot_token: None,
        }
    }

    fn notice(firing: &[&str], resolved: &[&str]) -> NoticePayload {
        NoticePayload::alerts(
            "g".into(),
            BTreeMap::new(),
            firing.iter().map(|k| alert(k, false)).collect(),
            resolved.iter().map(|k| alert(k, true)).collect(),
        )
    }

    /// A shared claim bucket as the cluster's: the first router to create a key holds it.
    #[derive(Default)]
    struct Bucket(Mutex<HashMap<String, String>>);

    impl Bucket {
        /// What a router's notifier does with one delivery: claim each incident, then decide.
        fn deliver(&self, router: &str, payload: &NoticePayload, to: &Target<'_>) -> Verdict {
            let claims = claims_for(payload, to);
            let (mut won, mut holders) = (BTreeSet::new(), BTreeSet::new());
            for c in &claims {
                let mut keys = self.0.lock().unwrap();
                let holder = keys.entry(c.key.clone()).or_insert_with(|| router.into());
                if holder == router {
                    won.insert(c.incident.clone());
                } else {
                    holders.insert(holder.clone());
                }
            }
            verdict(payload, &claims, &won, &holders)
        }
    }

    const SMS: Target<'static> = Target {
        receiver: "police",
        channel: "sms",
        target: "+84901234567",
    };

    #[test]
    fn routers_grouping_differently_tell_each_incident_once() {
        let bucket = Bucket::default();
        // Router a saw X and Y open together; router b saw Y (an update) and Z.
        assert_eq!(
            bucket.deliver("a", &notice(&["X", "Y"], &[]), &SMS),
            Verdict::Send
        );
        assert_eq!(
            bucket.deliver("b", &notice(&["Y", "Z"], &[]), &SMS),
            Verdict::Narrowed(notice(&["Z"], &[]))
        );
        // b's next notice tells only what a already told: nothing is left to send.
        assert_eq!(
            bucket.deliver("b", &notice(&["X"], &[]), &SMS),
            Verdict::Suppressed("duplicate: claimed by a".into())
        );
        // Resolved is its own claim: whichever router resolves first tells it, once.
        assert_eq!(
            bucket.deliver("b", &notice(&[], &["X"]), &SMS),
            Verdict::Send
        );
        assert_eq!(
            bucket.deliver("a", &notice(&[], &["X", "Y"]), &SMS),
            Verdict::Narrowed(notice(&[], &["Y"]))
        );
        // A router resending after a crash holds its own claims.
        assert_eq!(
            bucket.deliver("a", &notice(&["X", "Y"], &[]), &SMS),
            Verdict::Send
        );
    }

    #[test]
    fn claims_are_per_target_and_repeats_per_repeat() {
        let bucket = Bucket::default();
        let other = Target {
            target: "+84907654321",
            ..SMS
        };
        let mail = Target {
            channel: "email",
            ..SMS
        };
        assert_eq!(
            bucket.deliver("a", &notice(&["X"], &[]), &SMS),
            Verdict::Send
        );
        assert_eq!(
            bucket.deliver("b", &notice(&["X"], &[]), &other),
            Verdict::Send
        );
        assert_eq!(
            bucket.deliver("b", &notice(&["X"], &[]), &mail),
            Verdict::Send
        );
        let repeat = |n: i64| {
            let mut p = notice(&["X"], &[]);
            p.repeats.insert("X".into(), n);
            p
        };
        assert_eq!(bucket.deliver("b", &repeat(1), &SMS), Verdict::Send);
        assert_eq!(
            bucket.deliver("a", &repeat(1), &SMS),
            Verdict::Suppressed("duplicate: claimed by b".into())
        );
        assert_eq!(bucket.deliver("a", &repeat(2), &SMS), Verdict::Send);
    }

    #[test]
    fn a_flood_summary_claims_nothing() {
        let mut p = notice(&[], &[]);
        p.kind = NoticeKind::FloodSummary;
        assert!(claims_for(&p, &SMS).is_empty());
        assert_eq!(
            verdict(&p, &[], &BTreeSet::new(), &BTreeSet::new()),
            Verdict::Send
        );
    }
}
