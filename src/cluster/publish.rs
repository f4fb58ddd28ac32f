//! A node's incident outlet: each event the incident sink stored is published to the incident stream
//! (subject per camera, `Nats-Msg-Id` = [`message_id`]), an opened incident's snapshot first put in the
//! object store and referenced by the event. Same contract as the embedded router's queue: an event NATS
//! does not acknowledge in time is handed back as spilled and the [`Forwarder`](crate::app::Forwarder)
//! replays it from the incidents table once NATS is connected again; the stream's duplicate window drops
//! whatever reaches it twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{context::PublishErrorKind, message::PublishMessage, object_store};

use super::{Bus, ClusterError, Resources, message_id, snapshot_object, snapshot_ref};
use crate::alert::{self, Handed, QueueStats};
use crate::app::IncidentOutlet;
use crate::types::{CameraId, IncidentEvent, IncidentPhase};

/// Extra time an opened event with a snapshot gets for the picture's upload (a few hundred KB).
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);
/// How long [`IncidentOutlet::submit`] tries before leaving an event to the next start's replay.
const SUBMIT_WAIT: Duration = Duration::from_secs(10);

pub struct Publisher {
    bus: Bus,
    snapshots: object_store::ObjectStore,
    runtime: tokio::runtime::Handle,
    dropped_updates: AtomicU64,
    spilled: AtomicU64,
    published: AtomicU64,
}

impl Publisher {
    /// Publishes on `runtime` (the node's NATS runtime; the incident sink's thread blocks on it).
    pub fn new(bus: Bus, resources: &Resources, runtime: tokio::runtime::Handle) -> Self {
        Self {
            bus,
            snapshots: resources.snapshots.clone(),
            runtime,
            dropped_updates: AtomicU64::new(0),
            spilled: AtomicU64::new(0),
            published: AtomicU64::new(0),
        }
    }

    /// Events the stream stored since the start (not counting those it dropped as duplicates).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    fn connected(&self) -> bool {
        self.bus.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Uploads the snapshot of an opened event, rewrites the reference, publishes and waits for the ack.
    async fn publish(&self, mut event: IncidentEvent) -> Result<(), ClusterError> {
        let name = crate::retention::snapshot_name(&event.key);
        match event.snapshot.as_deref() {
            Some(r) if snapshot_object(r).is_some() => {}
            Some(path) if event.phase == IncidentPhase::Opened => {
                match tokio::fs::read(path).await {
                    Ok(jpeg) => {
                        self.snapshots
                            .put(name.as_str(), &mut jpeg.as_slice())
                            .await
                            .map_err(|e| ClusterError::jetstream(format!("snapshot {name}"), e))?;
                        event.snapshot = Some(snapshot_ref(&name));
                    }
                    Err(e) => {
                        // Retention removed it, or it was never written: the event goes without.
                        tracing::warn!(incident = %event.key, error = %e, "snapshot not readable: published without it");
                        event.snapshot = None;
                    }
                }
            }
            // A later event of the incident names the picture its opening uploaded.
            Some(_) => event.snapshot = Some(snapshot_ref(&name)),
            None => {}
        }
        let payload = serde_json::to_vec(&event)
            .map_err(|e| ClusterError::jetstream("encoding an incident event", e))?;
        let subject = self.bus.names.incident_subject(event.key.camera.as_str());
        let what = || format!("publishing to {subject}");
        let ack = self
            .bus
            .js
            .send_publish(
                subject.clone(),
                PublishMessage::build()
                    .payload(payload.into())
                    .message_id(message_id(&event)),
            )
            .await
            .map_err(|e| ClusterError::jetstream(what(), e))?
            .await
            .map_err(|e| match e.kind() {
                PublishErrorKind::TimedOut => ClusterError::jetstream(what(), "no acknowledgement"),
                _ => ClusterError::jetstream(what(), e),
            })?;
        if !ack.duplicate {
            self.published.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Publishes within `wait`: false when NATS did not acknowledge in time.
    fn publish_within(&self, event: IncidentEvent, wait: Duration) -> bool {
        let key = event.key.clone();
        let wait = if event.phase == IncidentPhase::Opened && event.snapshot.is_some() {
            wait + SNAPSHOT_WAIT
        } else {
            wait
        };
        match self
            .runtime
            .block_on(async { tokio::time::timeout(wait, self.publish(event)).await })
        {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::debug!(incident = %key, error = %e, "incident event not published");
                false
            }
            Err(_) => false,
        }
    }
}

impl IncidentOutlet for Publisher {
    fn offer(&self, event: IncidentEvent, wait: Duration) -> Handed {
        let update = event.phase == IncidentPhase::Updated;
        // While NATS is away nothing is waited for: the table keeps opens and closes for the replay.
        if self.connected() && self.publish_within(event, wait) {
            return Handed::Queued;
        }
        if update {
            self.dropped_updates.fetch_add(1, Ordering::Relaxed);
            Handed::DroppedUpdate
        } else {
            self.spilled.fetch_add(1, Ordering::Relaxed);
            Handed::Spilled
        }
    }

    fn submit(&self, event: IncidentEvent) {
        let key = event.key.clone();
        if !self.publish_within(event, SUBMIT_WAIT) {
            tracing::error!(incident = %key, "incident event not published within {SUBMIT_WAIT:?}: the next start publishes it from the incidents table");
        }
    }

    fn has_room(&self) -> bool {
        self.connected()
    }

    fn queue_stats(&self) -> QueueStats {
        QueueStats {
            dropped_updates: self.dropped_updates.load(Ordering::Relaxed),
            spilled: self.spilled.load(Ordering::Relaxed),
        }
    }

    /// Routers learn camera health from the health bucket, which the node writes for every camera it
    /// runs; nothing goes on the incident stream.
    fn camera_health(&self, _camera: &CameraId, _health: alert::CameraHealth) {}
}
