//! The cluster's foundation against a real nats-server: the stream, buckets and object store are created
//! idempotently, the stream drops a republished event by its message id, a lease bucket's compare-and-set
//! lets one of two creators win, and everything survives a server restart (file storage).

#[path = "support/nats.rs"]
mod nats;

use std::time::Duration;

use futures_util::StreamExt as _;
use nats::NatsServer;
use streetwatch::cluster::{Bus, ClusterConfig, message_id};
use streetwatch::secret::SecretUrl;
use streetwatch::types::{
    CameraId, IncidentEvent, IncidentKey, IncidentPhase, RuleKind, Severity, Timestamp,
};

fn config(server: &NatsServer) -> ClusterConfig {
    ClusterConfig {
        nats: SecretUrl::new(server.url()),
        ..ClusterConfig::default()
    }
}

fn event(camera: &str, phase: IncidentPhase, at: i64) -> IncidentEvent {
    IncidentEvent {
        key: IncidentKey {
            camera: CameraId::new(camera),
            rule: "crowd".into(),
            zone: "plaza".into(),
            episode: Timestamp(1_000),
        },
        phase,
        at: Timestamp(at),
        kind: RuleKind::Crowding,
        severity: Severity::Warning,
        camera_name: "Nguyễn Huệ".into(),
        ward: "Bến Nghé".into(),
        summary: "7 people".into(),
        count: 7,
        snapshot: None,
    }
}

async fn publish(bus: &Bus, e: &IncidentEvent) -> bool {
    let ack = bus
        .js
        .send_publish(
            bus.names.incident_subject(e.key.camera.as_str()),
            async_nats::jetstream::message::PublishMessage::build()
                .payload(serde_json::to_vec(e).unwrap().into())
                .message_id(message_id(e)),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    ack.duplicate
}

#[test]
fn foundation_dedups_publishes_arbitrates_leases_and_survives_a_restart() {
    let mut server = NatsServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let bus = Bus::connect(&config(&server), "test").await.unwrap();
        let res = bus.ensure().await.unwrap();
        bus.ensure().await.expect("ensure is idempotent");

        let opened = event("cam.1", IncidentPhase::Opened, 2_000);
        assert!(!publish(&bus, &opened).await, "first publish is new");
        assert!(publish(&bus, &opened).await, "same message id: a duplicate");
        assert!(!publish(&bus, &event("cam.1", IncidentPhase::Closed, 9_000)).await);
        let mut stream = res.incidents.clone();
        assert_eq!(stream.info().await.unwrap().state.messages, 2);

        // Two nodes race for one camera: create is compare-and-set on "no such key".
        res.leases.create("cam-1", "node-a".into()).await.unwrap();
        assert!(res.leases.create("cam-1", "node-b".into()).await.is_err());
        let entry = res.leases.entry("cam-1").await.unwrap().unwrap();
        assert_eq!(&entry.value[..], b"node-a");
        // A renewal against a stale revision fails: the holder changed in between.
        res.leases
            .update("cam-1", "node-a".into(), entry.revision)
            .await
            .unwrap();
        assert!(
            res.leases
                .update("cam-1", "node-b".into(), entry.revision)
                .await
                .is_err()
        );

        res.snapshots
            .put("inc-1.jpg", &mut &b"\xff\xd8jpeg"[..])
            .await
            .unwrap();
    });

    server.restart(Duration::from_millis(200));
    rt.block_on(async {
        let bus = Bus::connect(&config(&server), "test").await.unwrap();
        let res = bus.ensure().await.unwrap();
        let mut stream = res.incidents.clone();
        assert_eq!(
            stream.info().await.unwrap().state.messages,
            2,
            "events kept"
        );
        let entry = res.leases.entry("cam-1").await.unwrap().unwrap();
        assert_eq!(&entry.value[..], b"node-a", "lease kept");
        let mut object = res.snapshots.get("inc-1.jpg").await.unwrap();
        let mut body = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut object, &mut body)
            .await
            .unwrap();
        assert_eq!(body, b"\xff\xd8jpeg");
        // Within the duplicate window, a republish after the restart is still dropped.
        assert!(publish(&bus, &event("cam.1", IncidentPhase::Opened, 2_000)).await);
        let keys: Vec<String> = res
            .leases
            .keys()
            .await
            .unwrap()
            .map(|k| k.unwrap())
            .collect()
            .await;
        assert_eq!(keys, vec!["cam-1".to_string()]);
    });
}

#[test]
fn a_lease_expires_when_its_holder_stops_renewing() {
    let server = NatsServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = ClusterConfig {
            lease_seconds: 3,
            ..config(&server)
        };
        let bus = Bus::connect(&cfg, "test").await.unwrap();
        let res = bus.ensure().await.unwrap();
        res.leases.create("cam-2", "node-a".into()).await.unwrap();
        // Not renewed: after the bucket's max age the key is gone and another node may create it.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if res.leases.create("cam-2", "node-b".into()).await.is_ok() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "lease never expired");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let entry = res.leases.entry("cam-2").await.unwrap().unwrap();
        assert_eq!(&entry.value[..], b"node-b");
    });
}
