//! Citizen reports (`citizen_reports`): every report as received, and the incident it opened or joined. The
//! incident a new report joins is decided here, in one write transaction, from the reports already stored, so
//! the decision survives a restart.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};
use crate::types::{IncidentEvent, Timestamp};

/// The incidents citizens' reports open are on this virtual camera.
pub const CITIZEN_CAMERA: &str = "citizen";

pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS citizen_reports (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         at INTEGER NOT NULL,
         ward TEXT NOT NULL, category TEXT NOT NULL,
         zone TEXT NOT NULL,
         location TEXT, lat REAL, lon REAL,
         description TEXT NOT NULL,
         phone TEXT,
         photo TEXT NOT NULL,
         client TEXT NOT NULL,
         incident TEXT NOT NULL
     );
     CREATE INDEX IF NOT EXISTS citizen_reports_zone ON citizen_reports (zone, at);
     CREATE INDEX IF NOT EXISTS citizen_reports_incident ON citizen_reports (incident, at);";

/// Deletes reports made before `before` whose incident is gone (pruned).
pub(super) fn prune_orphans(
    tx: &rusqlite::Transaction<'_>,
    before: Timestamp,
) -> rusqlite::Result<usize> {
    tx.execute(
        "DELETE FROM citizen_reports WHERE at < ?1
             AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.id = citizen_reports.incident)",
        [before.0],
    )
}

/// A report to file. `phone` is normalised; it stays in this table (for calling the citizen back) and goes
/// nowhere else.
#[derive(Clone, Debug, PartialEq)]
pub struct NewReport {
    pub at: Timestamp,
    pub ward: String,
    pub category: String,
    /// The ward as a key and the category (`ben-nghe/parking`): reports of one zone are one incident
    /// while it is open, however the ward was spelled.
    pub zone: String,
    pub location: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub description: String,
    pub phone: Option<String>,
    pub photo: String,
    /// Who sent it: token name and peer address.
    pub client: String,
}

/// A report as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportRow {
    pub id: i64,
    pub report: NewReport,
    pub incident: String,
}

/// The open incident a report joins.
#[derive(Clone, Debug, PartialEq)]
pub struct Joined {
    /// The incident's id (its key as text).
    pub incident: String,
    /// Reports in it, this one included.
    pub reports: u32,
}

impl Store {
    /// Files `report`. It joins the open incident of the same zone (ward and category) whose last report is no
    /// older than `window_ms` (a closed incident, in `incidents`, is not joined); otherwise it belongs to
    /// `new_incident`. One write transaction, so two reports at once cannot both open an incident.
    /// Returns the report's id and the incident it joined, if any.
    pub fn file_citizen_report(
        &mut self,
        report: &NewReport,
        window_ms: i64,
        new_incident: &str,
    ) -> Result<(i64, Option<Joined>), StoreError> {
        let path = self.path.clone();
        let wrap = |source| StoreError {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(wrap)?;
        let open: Option<String> = tx
            .query_row(
                "SELECT c.incident FROM citizen_reports c
                 WHERE c.zone = ?1 AND c.at >= ?2
                   AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.id = c.incident AND i.closed_at IS NOT NULL)
                 ORDER BY c.at DESC, c.id DESC LIMIT 1",
                params![report.zone, report.at.0 - window_ms],
                |r| r.get(0),
            )
            .optional()
            .map_err(wrap)?;
        let incident = open.as_deref().unwrap_or(new_incident);
        tx.execute(
            "INSERT INTO citizen_reports (at, ward, category, zone, location, lat, lon, description, phone,
                 photo, client, incident)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                report.at.0,
                report.ward,
                report.category,
                report.zone,
                report.location,
                report.lat,
                report.lon,
                report.description,
                report.phone,
                report.photo,
                report.client,
                incident
            ],
        )
        .map_err(wrap)?;
        let id = tx.last_insert_rowid();
        let joined = match open {
            Some(incident) => {
                let reports: u32 = tx
                    .query_row(
                        "SELECT COUNT(*) FROM citizen_reports WHERE incident = ?1",
                        [&incident],
                        |r| r.get(0),
                    )
                    .map_err(wrap)?;
                Some(Joined { incident, reports })
            }
            None => None,
        };
        tx.commit().map_err(wrap)?;
        Ok((id, joined))
    }

    /// Takes back a report whose incident event the pipeline would not take.
    pub fn withdraw_citizen_report(&self, id: i64) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM citizen_reports WHERE id = ?1", [id])
            .map_err(|source| StoreError {
                path: self.path.clone(),
                source,
            })?;
        Ok(())
    }

    /// The reports of one incident, oldest first.
    pub fn citizen_reports(&self, incident: &str) -> Result<Vec<ReportRow>, StoreError> {
        let wrap = |source| StoreError {
            path: self.path.clone(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, at, ward, category, zone, location, lat, lon, description, phone, photo, client,
                     incident
                 FROM citizen_reports WHERE incident = ?1 ORDER BY at, id",
            )
            .map_err(wrap)?;
        let rows = stmt
            .query_map([incident], |r| {
                Ok(ReportRow {
                    id: r.get(0)?,
                    report: NewReport {
                        at: Timestamp(r.get(1)?),
                        ward: r.get(2)?,
                        category: r.get(3)?,
                        zone: r.get(4)?,
                        location: r.get(5)?,
                        lat: r.get(6)?,
                        lon: r.get(7)?,
                        description: r.get(8)?,
                        phone: r.get(9)?,
                        photo: r.get(10)?,
                        client: r.get(11)?,
                    },
                    incident: r.get(12)?,
                })
            })
            .map_err(wrap)?;
        rows.collect::<Result<_, _>>().map_err(wrap)
    }

    /// Open citizen-report incidents whose last report came before `before`: the events that opened them,
    /// with their latest count and summary.
    pub fn idle_citizen_incidents(
        &self,
        before: Timestamp,
    ) -> Result<Vec<IncidentEvent>, StoreError> {
        Ok(self
            .events(
                "WHERE closed_at IS NULL AND camera = ?1 AND id IN
                     (SELECT incident FROM citizen_reports GROUP BY incident HAVING MAX(at) < ?2)
                 ORDER BY opened_at",
                params![CITIZEN_CAMERA, before.0],
            )?
            .into_iter()
            .map(|r| r.opened)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::*;

    fn report(at: i64, ward: &str, category: &str) -> NewReport {
        NewReport {
            at: Timestamp(at),
            ward: ward.into(),
            category: category.into(),
            zone: format!("{}/{category}", ward.to_lowercase()),
            location: Some("12 Lê Lợi".into()),
            lat: None,
            lon: None,
            description: "xe máy chiếm hết vỉa hè".into(),
            phone: Some("+84901234567".into()),
            photo: "/tmp/p.jpg".into(),
            client: "kiosk@127.0.0.1".into(),
        }
    }

    fn opened(id_zone: &str, at: i64) -> IncidentEvent {
        IncidentEvent {
            key: IncidentKey {
                camera: CameraId::new(CITIZEN_CAMERA),
                rule: "citizen_report".into(),
                zone: id_zone.into(),
                episode: Timestamp(at),
            },
            phase: IncidentPhase::Opened,
            at: Timestamp(at),
            kind: RuleKind::CitizenReport,
            severity: Severity::Warning,
            camera_name: "Phản ánh: 12 Lê Lợi".into(),
            ward: "Bến Nghé".into(),
            summary: "1 người dân phản ánh".into(),
            count: 1,
            snapshot: None,
        }
    }

    #[test]
    fn reports_join_the_open_incident_of_their_ward_and_category_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("sw.db")).unwrap();
        const MIN: i64 = 60_000;
        let (a, j) = s
            .file_citizen_report(&report(0, "Bến Nghé", "parking"), 30 * MIN, "inc-1")
            .unwrap();
        assert_eq!(j, None);
        // Same ward and category 20 minutes later: the same incident, two reports.
        let (b, j) = s
            .file_citizen_report(&report(20 * MIN, "Bến Nghé", "parking"), 30 * MIN, "inc-2")
            .unwrap();
        assert!(b > a);
        assert_eq!(
            j,
            Some(Joined {
                incident: "inc-1".into(),
                reports: 2
            })
        );
        // Another category, another ward: incidents of their own.
        let (_, j) = s
            .file_citizen_report(&report(21 * MIN, "Bến Nghé", "noise"), 30 * MIN, "inc-3")
            .unwrap();
        assert_eq!(j, None);
        let (_, j) = s
            .file_citizen_report(&report(21 * MIN, "Đa Kao", "parking"), 30 * MIN, "inc-4")
            .unwrap();
        assert_eq!(j, None);
        // The window runs from the last report (20 min), not the first: 49 min is inside, 80 min is not.
        let (_, j) = s
            .file_citizen_report(&report(49 * MIN, "Bến Nghé", "parking"), 30 * MIN, "inc-5")
            .unwrap();
        assert_eq!(
            j.map(|j| (j.incident, j.reports)),
            Some(("inc-1".into(), 3))
        );
        let (_, j) = s
            .file_citizen_report(&report(80 * MIN, "Bến Nghé", "parking"), 30 * MIN, "inc-6")
            .unwrap();
        assert_eq!(j, None);
        let rows = s.citizen_reports("inc-1").unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].report, report(0, "Bến Nghé", "parking"));
    }

    #[test]
    fn a_closed_incident_is_not_joined_and_idle_ones_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("sw.db")).unwrap();
        let ev = opened("ben-nghe/parking", 1000);
        let id = ev.key.to_string();
        s.file_citizen_report(&report(1000, "Bến Nghé", "parking"), 1_800_000, &id)
            .unwrap();
        s.record(&ev).unwrap();
        assert_eq!(s.idle_citizen_incidents(Timestamp(1000)).unwrap(), vec![]);
        assert_eq!(
            s.idle_citizen_incidents(Timestamp(1001))
                .unwrap()
                .into_iter()
                .map(|e| e.key.to_string())
                .collect::<Vec<_>>(),
            vec![id.clone()]
        );
        s.record(&IncidentEvent {
            phase: IncidentPhase::Closed,
            at: Timestamp(2000),
            ..ev
        })
        .unwrap();
        assert_eq!(s.idle_citizen_incidents(Timestamp(5000)).unwrap(), vec![]);
        let (_, j) = s
            .file_citizen_report(&report(3000, "Bến Nghé", "parking"), 1_800_000, "next")
            .unwrap();
        assert_eq!(j, None, "a closed incident takes no more reports");
        // A withdrawn report is gone.
        let (id2, _) = s
            .file_citizen_report(&report(3001, "Bến Nghé", "parking"), 1_800_000, "other")
            .unwrap();
        s.withdraw_citizen_report(id2).unwrap();
        assert_eq!(s.citizen_reports("next").unwrap().len(), 1);
        // Pruning the closed incident takes its reports; the reports of one not recorded yet stay.
        assert_eq!(s.prune_closed(Timestamp(2500), 10).unwrap().len(), 1);
        assert_eq!(s.citizen_reports(&id).unwrap(), vec![]);
        assert_eq!(s.citizen_reports("next").unwrap().len(), 1);
    }
}
