//! Several machines: analysis nodes own shards of the cameras and publish incident events; routers consume
//! them and notify. NATS JetStream carries everything between them (an existing engine, not a home-made
//! cluster):
//!
//! ```text
//! node ──incident events (Nats-Msg-Id)──▶ stream {P}_INCIDENTS ──durable pull consumer──▶ router(s)
//! node ──snapshots──▶ object store {P}_snapshots ◀── router (fetches what an event references)
//! node ◀─▶ KV {P}_leases (camera → node, compare-and-set, expiry)   KV {P}_nodes (node heartbeats)
//! node ──▶ KV {P}_health (camera health) ──▶ router's page and /metrics
//! router ──▶ KV {P}_claims (a notice's idempotency key, created once) before delivery
//! ```
//!
//! NATS 2.9 has no per-key expiry, so a bucket's `max_age` is its keys' lifetime: a holder keeps a lease
//! or heartbeat by rewriting it well within that time, and a process that dies lets its keys expire.

mod config;
pub mod health;
pub mod leases;
pub mod placement;
mod publish;
pub mod router;

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store, stream};

pub use config::ClusterConfig;
pub use publish::Publisher;

use crate::health::HealthSnapshot;
use crate::types::{IncidentEvent, Timestamp};

/// How long the incident stream remembers a message id: a republish or replay within it is dropped by the
/// server. Covers a node's restart and the replay of what it could not publish while NATS was away.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(30 * 60);
/// How long incident events stay in the stream: long enough for a router that was down a day to catch up.
pub const EVENTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a claimed notice key is remembered: beyond any redelivery of the event that made it.
pub const CLAIMS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("connecting to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("JetStream {what}: {message}")]
    JetStream { what: String, message: String },
}

impl ClusterError {
    pub(crate) fn jetstream(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        ClusterError::JetStream {
            what: what.into(),
            message: e.to_string(),
        }
    }
}

/// The names of everything one deployment keeps in NATS, all under its `prefix`.
#[derive(Clone, Debug)]
pub struct Names {
    pub prefix: String,
}

impl Names {
    pub fn incidents_stream(&self) -> String {
        format!("{}_INCIDENTS", self.prefix.to_uppercase())
    }
    /// The subject of a camera's incident events.
    pub fn incident_subject(&self, camera: &str) -> String {
        format!("{}.incidents.{}", self.prefix, subject_token(camera))
    }
    pub fn incident_subjects(&self) -> String {
        format!("{}.incidents.>", self.prefix)
    }
    pub fn leases(&self) -> String {
        format!("{}_leases", self.prefix)
    }
    pub fn nodes(&self) -> String {
        format!("{}_nodes", self.prefix)
    }
    pub fn health(&self) -> String {
        format!("{}_health", self.prefix)
    }
    pub fn claims(&self) -> String {
        format!("{}_claims", self.prefix)
    }
    pub fn snapshots(&self) -> String {
        format!("{}_snapshots", self.prefix)
    }
}

/// A camera id as one subject token or KV key: NATS reserves `.`, `*`, `>` and whitespace, and KV keys
/// allow `[-/_=.a-zA-Z0-9]`; anything else (and `_`, the escape) becomes `_` and its code point in hex, so
/// distinct ids stay distinct.
pub fn subject_token(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for c in id.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            out.push(c);
        } else {
            out.push_str(&format!("_{:x}", c as u32));
        }
    }
    out
}

/// The message id of an incident event: the incident and the event's place in its life, so the same event
/// published twice (a retry, a replay after a restart) is stored once by the stream.
pub fn message_id(event: &IncidentEvent) -> String {
    format!("{}:{}:{}", event.key, event.phase.as_str(), event.at.0)
}

/// What an event's `snapshot` holds when the picture is in the object store rather than on this machine's
/// disk: this prefix and the object's name.
pub const SNAPSHOT_OBJECT_PREFIX: &str = "object:";

/// The object-store reference of a snapshot named `name`.
pub fn snapshot_ref(name: &str) -> String {
    format!("{SNAPSHOT_OBJECT_PREFIX}{name}")
}

/// The object name in a snapshot reference, if it is one.
pub fn snapshot_object(reference: &str) -> Option<&str> {
    reference.strip_prefix(SNAPSHOT_OBJECT_PREFIX)
}

/// A camera's health as a node reports it, the value of its key in the health bucket (JSON).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct HealthRecord {
    /// The node running the camera.
    pub node: String,
    /// When the node wrote it (its clock).
    pub at: Timestamp,
    pub health: HealthSnapshot,
}

/// A node's heartbeat, the value of its key in the nodes bucket (JSON).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeRecord {
    pub node: String,
    pub started_at: Timestamp,
    /// The camera cost the node can carry (see placement); nodes share cameras in proportion to it.
    pub capacity: f64,
}

/// A connection to NATS with JetStream, and the deployment's names.
#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub names: Names,
    /// The bucket lifetime of leases and heartbeats (see the module notes).
    pub lease_ttl: Duration,
}

/// The deployment's stream, buckets and object store, created (or brought to this configuration) by
/// [`Bus::ensure`].
#[derive(Clone)]
pub struct Resources {
    pub incidents: stream::Stream,
    pub leases: kv::Store,
    pub nodes: kv::Store,
    pub health: kv::Store,
    pub claims: kv::Store,
    pub snapshots: object_store::ObjectStore,
}

impl Bus {
    /// Connects, retrying in the background until the server answers: a node or router may start before
    /// NATS does, and rides out its restarts afterwards (the client reconnects on its own).
    pub async fn connect(config: &ClusterConfig, name: &str) -> Result<Bus, ClusterError> {
        let url = config.nats.as_str();
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS connection lost; reconnecting")
                    }
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    other => tracing::debug!(event = %other, "NATS"),
                }
            })
            .connect(url)
            .await
            .map_err(|e| ClusterError::Connect {
                url: config.nats.redacted(),
                message: crate::secret::redact_urls_in(&e.to_string()),
            })?;
        let js = jetstream::new(client.clone());
        Ok(Bus {
            client,
            js,
            names: Names {
                prefix: config.prefix.clone(),
            },
            lease_ttl: config.lease_ttl(),
        })
    }

    /// Creates the stream, buckets and object store, or updates them to this configuration. Every process
    /// calls it at start; it is idempotent.
    pub async fn ensure(&self) -> Result<Resources, ClusterError> {
        let n = &self.names;
        let incidents = self
            .js
            .create_or_update_stream(stream::Config {
                name: n.incidents_stream(),
                subjects: vec![n.incident_subjects()],
                storage: stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                max_age: EVENTS_MAX_AGE,
                ..Default::default()
            })
            .await
            .map_err(|e| ClusterError::jetstream(format!("stream {}", n.incidents_stream()), e))?;
        let incidents = self
            .js
            .get_stream(&incidents.config.name)
            .await
            .map_err(|e| ClusterError::jetstream(format!("stream {}", n.incidents_stream()), e))?;
        let leases = self.kv(n.leases(), self.lease_ttl).await?;
        let nodes = self.kv(n.nodes(), self.lease_ttl).await?;
        // Health outlives a lease a little, so a camera moving to another node is never shown unknown.
        let health = self.kv(n.health(), self.lease_ttl * 3).await?;
        let claims = self.kv(n.claims(), CLAIMS_MAX_AGE).await?;
        let snapshots = match self.js.get_object_store(n.snapshots()).await {
            Ok(store) => store,
            Err(_) => self
                .js
                .create_object_store(object_store::Config {
                    bucket: n.snapshots(),
                    max_age: EVENTS_MAX_AGE,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    ClusterError::jetstream(format!("object store {}", n.snapshots()), e)
                })?,
        };
        Ok(Resources {
            incidents,
            leases,
            nodes,
            health,
            claims,
            snapshots,
        })
    }

    /// A key-value bucket holding one value per key. async-nats's own `create_key_value` first asks for
    /// the account's limits, whose reply from a 2.9 server it cannot parse; a bucket is a stream of a fixed
    /// shape (the KV convention), so this creates that stream and opens it as a bucket.
    async fn kv(&self, bucket: String, max_age: Duration) -> Result<kv::Store, ClusterError> {
        let err =
            |e: &dyn std::fmt::Display| ClusterError::jetstream(format!("bucket {bucket}"), e);
        self.js
            .get_or_create_stream(stream::Config {
                name: format!("KV_{bucket}"),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                max_age,
                storage: stream::StorageType::File,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| err(&e))?;
        self.js
            .get_key_value(bucket.clone())
            .await
            .map_err(|e| err(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_ids_become_single_subject_tokens() {
        assert_eq!(subject_token("cam-0042"), "cam-0042");
        assert_eq!(subject_token("d1.walkway"), "d1_2ewalkway");
        assert_eq!(subject_token("a b>*"), "a_20b_3e_2a");
        assert_eq!(subject_token("a_b"), "a_5fb");
        assert_ne!(subject_token("a.b"), subject_token("a_2eb"));
    }
}
