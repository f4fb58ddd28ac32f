//! Citizen reports as an alert source ("mỗi người dân là một cảm biến"): `POST /api/reports` takes a photo
//! and a few fields from a ward's reporting app or kiosk and turns them into an incident of rule
//! `citizen_report` on the virtual camera `citizen`, handed to the incident sink like a camera's (recorded,
//! then routed by ward: one alert, one SMS to the ward's duty officer).
//!
//! Reports of the same category in the same ward while such an incident is open (and within
//! [`JOIN_WINDOW_MS`] of its last report) are one incident: each later one is an `updated` event with the
//! count of reports, which the router takes as news about the same alert, not a new one. Which incident a
//! report joins is decided in SQLite (`citizen_reports`), so it survives a restart. An incident with no new
//! report for [`CLOSE_AFTER_MS`] is closed by [`close_idle`].
//!
//! Limits: the photo is a JPEG or PNG (magic bytes and a readable header, else 415) of at most
//! [`PHOTO_MAX`] bytes (413, checked while the body streams in; the body as a whole is capped a little above
//! it); each client (token name and peer address) has a token bucket (429 with `Retry-After`).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Multipart, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::store::{CITIZEN_CAMERA, NewReport, Store};
use crate::types::{
    CameraId, IncidentEvent, IncidentKey, IncidentPhase, RuleKind, Severity, Timestamp,
};

use super::auth::Caller;
use super::config::Role;
use super::error::ApiError;
use super::state::{AppState, IncidentSubmit};

/// Largest photo accepted.
pub const PHOTO_MAX: usize = 5 * 1024 * 1024;
/// Largest request body: the photo and room for the text fields and the multipart framing.
const BODY_MAX: usize = PHOTO_MAX + 64 * 1024;
/// Most bytes read of one text field; longer ones are refused without reading further.
const TEXT_FIELD_MAX: usize = 16 * 1024;
/// A report joins an open incident of its ward and category whose last report is at most this old.
pub const JOIN_WINDOW_MS: i64 = 30 * 60_000;
/// An incident with no new report for this long is closed.
pub const CLOSE_AFTER_MS: i64 = 2 * 3_600_000;
/// How often idle incidents are looked for.
const CLOSE_SWEEP: Duration = Duration::from_secs(10);
/// Clients the rate limiter remembers at most (a few hundred bytes each).
const MAX_CLIENTS: usize = 10_000;
/// Largest PNG (in pixels) re-encoded as JPEG: 24 MP is past any phone camera, and bounds the memory
/// decoding takes (~100 MB).
const PNG_MAX_PIXELS: u64 = 24_000_000;
const DESCRIPTION_MAX: usize = 2000;
const LOCATION_MAX: usize = 200;
const WARD_MAX: usize = 100;

/// The categories a district uses, with their words in a summary.
pub const CATEGORIES: [(&str, &str); 8] = [
    ("crowding", "tụ tập đông người"),
    ("vending", "buôn bán hàng rong"),
    ("encroachment", "lấn chiếm vỉa hè"),
    ("parking", "đỗ xe sai quy định"),
    ("traffic", "vi phạm, ùn tắc giao thông"),
    ("noise", "gây ồn ào"),
    ("litter", "xả rác"),
    ("other", "sự việc khác"),
];

/// `[serve.reports]`: how many reports one client (token and address) may send.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportLimits {
    /// Reports a client may send at once.
    pub burst: u32,
    /// Reports per hour a client may send over time (10 per 10 minutes by default).
    pub per_hour: u32,
}

impl Default for ReportLimits {
    fn default() -> Self {
        Self {
            burst: 5,
            per_hour: 60,
        }
    }
}

impl ReportLimits {
    /// The first mistake: its key (under `reports.`) and what is wrong.
    pub fn check(&self) -> Result<(), (String, String)> {
        if !(1..=100_000).contains(&self.burst) {
            return Err(("burst".into(), "must be between 1 and 100000".into()));
        }
        if !(1..=1_000_000).contains(&self.per_hour) {
            return Err(("per_hour".into(), "must be between 1 and 1000000".into()));
        }
        Ok(())
    }
}

/// What the report handlers share for the server's life.
pub struct Reports {
    limiter: Mutex<Limiter>,
    /// Filing a report and handing its event over happen in report order: an `updated` event never
    /// overtakes the `opened` one of its incident.
    filing: tokio::sync::Mutex<()>,
    /// PNGs decoded at once (each may take ~100 MB).
    png: tokio::sync::Semaphore,
}

impl Reports {
    pub fn new(limits: &ReportLimits) -> Arc<Self> {
        Arc::new(Self {
            limiter: Mutex::new(Limiter::new(limits)),
            filing: tokio::sync::Mutex::new(()),
            png: tokio::sync::Semaphore::new(1),
        })
    }
}

/// The report routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/reports", post(submit))
        .layer(DefaultBodyLimit::max(BODY_MAX))
}

/// The answer to a report filed.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Filed {
    pub report_id: i64,
    /// The incident's key.
    pub incident: String,
    /// True when the report joined an incident already open.
    pub duplicate_of_open: bool,
}

/// The peer's address when the server records it.
struct Peer(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

async fn submit(
    State(state): State<AppState>,
    Peer(peer): Peer,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    match handle(state, peer, caller, multipart).await {
        Ok(filed) => (StatusCode::CREATED, Json(filed)).into_response(),
        Err(Refused::Api(e)) => e.into_response(),
        Err(Refused::TooMany(wait)) => {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, secs.to_string())],
                Json(serde_json::json!({
                    "error": format!("too many reports from this client; try again in {secs} s")
                })),
            )
                .into_response()
        }
    }
}

enum Refused {
    Api(ApiError),
    TooMany(Duration),
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        Refused::Api(e)
    }
}

async fn handle(
    state: AppState,
    peer: Option<IpAddr>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Filed, Refused> {
    caller.require(Role::Reporter, "submit citizen reports")?;
    let client = match peer {
        Some(ip) => format!("{}@{ip}", caller.name),
        None => caller.name.clone(),
    };
    state
        .reports
        .limiter
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take((caller.name.clone(), peer), Instant::now())
        .map_err(Refused::TooMany)?;
    let mut multipart = multipart.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let form = match read_form(&mut multipart).await {
        Ok(f) => f,
        Err(e) => {
            // Read the rest (up to the body limit) so the client sees the answer, not a reset connection.
            drain(&mut multipart).await;
            return Err(e.into());
        }
    };
    let wards: Vec<String> = state
        .ctx
        .cameras
        .load()
        .iter()
        .map(|c| c.ward.clone())
        .collect();
    let report = validate(form, &wards)?;
    Ok(file(&state, report, client).await?)
}

/// The fields as sent.
#[derive(Default)]
struct Form {
    photo: Option<Vec<u8>>,
    ward: Option<String>,
    location: Option<String>,
    lat: Option<String>,
    lon: Option<String>,
    category: Option<String>,
    description: Option<String>,
    phone: Option<String>,
}

/// A multipart error: the client's (400, or 413 past the body limit), whatever the reader says.
fn multipart_error(e: MultipartError) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            status,
            format!(
                "the request is larger than {} bytes (a photo may be at most 5 MiB)",
                BODY_MAX
            ),
        );
    }
    ApiError::bad_request(format!("malformed multipart body: {}", e.body_text()))
}

async fn read_form(multipart: &mut Multipart) -> Result<Form, ApiError> {
    let mut form = Form::default();
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        let slot = match name.as_str() {
            "photo" => {
                if form.photo.is_some() {
                    return Err(twice("photo"));
                }
                form.photo = Some(read_photo(&mut field).await?);
                continue;
            }
            "ward" => &mut form.ward,
            "location" => &mut form.location,
            "lat" => &mut form.lat,
            "lon" => &mut form.lon,
            "category" => &mut form.category,
            "description" => &mut form.description,
            "phone" => &mut form.phone,
            _ => {
                // Fields of a newer app are ignored, but read.
                while field.chunk().await.map_err(multipart_error)?.is_some() {}
                continue;
            }
        };
        if slot.is_some() {
            return Err(twice(&name));
        }
        *slot = Some(read_text(&mut field, &name).await?);
    }
    Ok(form)
}

fn twice(name: &str) -> ApiError {
    ApiError::unprocessable(format!("`{name}` is given twice"))
}

async fn read_text(field: &mut Field<'_>, name: &str) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > TEXT_FIELD_MAX {
            return Err(ApiError::unprocessable(format!("`{name}` is too long")));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes)
        .map_err(|_| ApiError::unprocessable(format!("`{name}` is not UTF-8 text")))
}

/// Reads the photo, refusing it as soon as it is too large or its first bytes are not a JPEG's or a PNG's.
async fn read_photo(field: &mut Field<'_>) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    let mut checked = false;
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > PHOTO_MAX {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("`photo` is larger than 5 MiB ({PHOTO_MAX} bytes)"),
            ));
        }
        bytes.extend_from_slice(&chunk);
        if !checked && bytes.len() >= PNG_MAGIC.len() {
            photo_format(&bytes)?;
            checked = true;
        }
    }
    Ok(bytes)
}

/// Reads and drops what is left of the body (bounded by the body limit).
async fn drain(multipart: &mut Multipart) {
    while let Ok(Some(mut field)) = multipart.next_field().await {
        while let Ok(Some(_)) = field.chunk().await {}
    }
}

const PNG_MAGIC: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

fn unsupported(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("`photo` must be a JPEG or PNG image: {why}"),
    )
}

/// The photo's format by its magic bytes.
fn photo_format(bytes: &[u8]) -> Result<image::ImageFormat, ApiError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Ok(image::ImageFormat::Jpeg)
    } else if bytes.starts_with(&PNG_MAGIC) {
        Ok(image::ImageFormat::Png)
    } else {
        Err(unsupported("its first bytes are neither"))
    }
}

/// The photo's format and size, from magic bytes and a header that decodes.
fn photo_header(bytes: &[u8]) -> Result<(image::ImageFormat, u32, u32), ApiError> {
    let format = photo_format(bytes)?;
    let (w, h) = image::ImageReader::with_format(std::io::Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| unsupported(&format!("its header does not decode ({e})")))?;
    if w == 0 || h == 0 {
        return Err(unsupported("it has no pixels"));
    }
    Ok((format, w, h))
}

/// A report that passed every check.
#[derive(Debug)]
struct Report {
    photo: Vec<u8>,
    format: image::ImageFormat,
    ward: String,
    ward_slug: String,
    category: &'static str,
    category_vi: &'static str,
    location: Option<String>,
    coords: Option<(f64, f64)>,
    description: String,
    phone: Option<String>,
}

impl Report {
    fn place(&self) -> String {
        place(self.location.as_deref(), self.coords)
    }
}

/// Where, in words: the text given, else the coordinates.
fn place(location: Option<&str>, coords: Option<(f64, f64)>) -> String {
    match (location, coords) {
        (Some(l), _) => l.to_string(),
        (None, Some((lat, lon))) => format!("{lat:.5}, {lon:.5}"),
        (None, None) => String::new(),
    }
}

/// A ward's name as a key: lower-case ASCII letters and digits joined by `-` ("Bến Nghé" → "ben-nghe").
pub fn ward_slug(ward: &str) -> String {
    let ascii = crate::alert::gsm::strip_diacritics(ward).to_lowercase();
    let mut out = String::new();
    for c in ascii.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

fn required(v: Option<String>, name: &str) -> Result<String, ApiError> {
    match v.map(|s| s.trim().to_string()) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(ApiError::unprocessable(format!("`{name}` is required"))),
    }
}

fn optional(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn at_most(v: &str, name: &str, max: usize) -> Result<(), ApiError> {
    if v.chars().count() > max {
        return Err(ApiError::unprocessable(format!(
            "`{name}` may be at most {max} characters"
        )));
    }
    Ok(())
}

fn coordinate(v: &str, name: &str, limit: f64) -> Result<f64, ApiError> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && (-limit..=limit).contains(&x) => Ok(x),
        _ => Err(ApiError::unprocessable(format!(
            "`{name}` must be a number between -{limit} and {limit}"
        ))),
    }
}

/// Checks the fields; `wards` are the configured cameras' wards (any ward is taken when there are none).
fn validate(form: Form, wards: &[String]) -> Result<Report, ApiError> {
    let photo = form
        .photo
        .ok_or_else(|| ApiError::unprocessable("`photo` is required (a JPEG or PNG)"))?;
    if photo.is_empty() {
        return Err(ApiError::unprocessable("`photo` is empty"));
    }
    let (format, w, h) = photo_header(&photo)?;
    if format == image::ImageFormat::Png && u64::from(w) * u64::from(h) > PNG_MAX_PIXELS {
        return Err(ApiError::unprocessable(format!(
            "`photo`: a PNG may have at most {PNG_MAX_PIXELS} pixels ({w}×{h} sent); send a JPEG"
        )));
    }
    let mut ward = required(form.ward, "ward")?;
    at_most(&ward, "ward", WARD_MAX)?;
    let ward_slug = ward_slug(&ward);
    if ward_slug.is_empty() {
        return Err(ApiError::unprocessable(
            "`ward` must have letters or digits",
        ));
    }
    if !wards.is_empty() {
        // The district's own spelling, whatever the case and accents the app used.
        match wards.iter().find(|w| self::ward_slug(w) == ward_slug) {
            Some(w) => ward = w.clone(),
            None => {
                let mut known: Vec<&str> = wards.iter().map(String::as_str).collect();
                known.sort_unstable();
                known.dedup();
                let shown = known
                    .iter()
                    .take(10)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ");
                let more = if known.len() > 10 {
                    format!(" … ({} in all)", known.len())
                } else {
                    String::new()
                };
                return Err(ApiError::unprocessable(format!(
                    "`ward` must be one of the district's wards: {shown}{more}"
                )));
            }
        }
    }
    let location = optional(form.location);
    if let Some(l) = &location {
        at_most(l, "location", LOCATION_MAX)?;
    }
    let coords = match (optional(form.lat), optional(form.lon)) {
        (Some(lat), Some(lon)) => Some((
            coordinate(&lat, "lat", 90.0)?,
            coordinate(&lon, "lon", 180.0)?,
        )),
        (None, None) => None,
        _ => return Err(ApiError::unprocessable("`lat` and `lon` go together")),
    };
    if location.is_none() && coords.is_none() {
        return Err(ApiError::unprocessable(
            "`location` (text) or `lat` and `lon` is required",
        ));
    }
    let category = required(form.category, "category")?.to_lowercase();
    let (category, category_vi) = CATEGORIES
        .iter()
        .find(|(c, _)| *c == category)
        .copied()
        .ok_or_else(|| {
            let names: Vec<&str> = CATEGORIES.iter().map(|(c, _)| *c).collect();
            ApiError::unprocessable(format!("`category` must be one of: {}", names.join(", ")))
        })?;
    let description = required(form.description, "description")?;
    at_most(&description, "description", DESCRIPTION_MAX)?;
    let phone = optional(form.phone)
        .map(|p| {
            crate::alert::normalize_phone(&p)
                .map_err(|e| ApiError::unprocessable(format!("`phone`: {e}")))
        })
        .transpose()?;
    Ok(Report {
        photo,
        format,
        ward,
        ward_slug,
        category,
        category_vi,
        location,
        coords,
        description,
        phone,
    })
}

/// The incident's summary: how many citizens reported what, where, and the latest description (without
/// anything that looks like a phone number, cut to fit an SMS).
fn summary(reports: u32, category_vi: &str, place: &str, description: &str) -> String {
    let desc = cut(hide_numbers(description).trim(), 120);
    format!(
        "{reports} người dân phản ánh {category_vi} tại {}: {desc}",
        cut(place, 80)
    )
}

/// Replaces runs of 8 or more digits (with the spaces, dots, dashes and brackets people write numbers with)
/// by `…`, and control characters by spaces.
fn hide_numbers(text: &str) -> String {
    fn flush(run: &mut String, out: &mut String) {
        if run.chars().filter(char::is_ascii_digit).count() >= 8 {
            let kept = run.trim_end_matches(|c: char| !c.is_ascii_digit()).len();
            out.push('…');
            out.push_str(&run[kept..]);
        } else {
            out.push_str(run);
        }
        run.clear();
    }
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    for c in text.chars() {
        let starts = c.is_ascii_digit() || c == '+' || c == '(';
        let continues = !run.is_empty() && matches!(c, ' ' | '.' | '-' | ')');
        if starts || continues {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(if c.is_control() { ' ' } else { c });
        }
    }
    flush(&mut run, &mut out);
    out
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Saves the photo, files the report and hands its incident event over, in report order.
async fn file(state: &AppState, report: Report, client: String) -> Result<Filed, ApiError> {
    let submit = state.ctx.submit.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "citizen reports are not taken: this server has no incident pipeline",
        )
    })?;
    let mut report = report;
    if report.format == image::ImageFormat::Png {
        // Snapshots are JPEGs everywhere (the link, the e-mail attachment): re-encode, one at a time.
        let _permit = state
            .reports
            .png
            .acquire()
            .await
            .map_err(ApiError::internal)?;
        let png = std::mem::take(&mut report.photo);
        report.photo = tokio::task::spawn_blocking(move || png_to_jpeg(&png))
            .await
            .map_err(ApiError::internal)??;
    }
    let _order = state.reports.filing.lock().await;
    let ctx = state.ctx.clone();
    tokio::task::spawn_blocking(move || {
        let at = ctx.clock.now();
        let name = format!(
            "{CITIZEN_CAMERA}-{:016x}_{}_{}.jpg",
            fastrand::u64(..),
            RuleKind::CitizenReport.as_str(),
            at.0
        );
        let path = ctx.snapshots_dir.join(name);
        std::fs::write(&path, &report.photo).map_err(ApiError::internal)?;
        let filed = file_and_hand_over(&ctx.db_path, &path, &report, client, at, &submit);
        if filed.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        filed
    })
    .await
    .map_err(ApiError::internal)?
}

fn png_to_jpeg(png: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut reader =
        image::ImageReader::with_format(std::io::Cursor::new(png), image::ImageFormat::Png);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(PNG_MAX_PIXELS * 4 + (16 << 20));
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| unsupported(&format!("the PNG does not decode ({e})")))?
        .into_rgb8();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&img)
        .map_err(ApiError::internal)?;
    Ok(out)
}

fn file_and_hand_over(
    db: &std::path::Path,
    photo: &std::path::Path,
    report: &Report,
    client: String,
    at: Timestamp,
    submit: &IncidentSubmit,
) -> Result<Filed, ApiError> {
    let key = IncidentKey {
        camera: CameraId::new(CITIZEN_CAMERA),
        rule: RuleKind::CitizenReport.as_str().into(),
        zone: format!("{}/{}", report.ward_slug, report.category),
        episode: at,
    };
    let row = NewReport {
        at,
        ward: report.ward.clone(),
        category: report.category.into(),
        zone: key.zone.clone(),
        location: report.location.clone(),
        lat: report.coords.map(|c| c.0),
        lon: report.coords.map(|c| c.1),
        description: report.description.clone(),
        phone: report.phone.clone(),
        photo: photo.display().to_string(),
        client,
    };
    let mut store = Store::open(db).map_err(ApiError::internal)?;
    let (report_id, joined) = store
        .file_citizen_report(&row, JOIN_WINDOW_MS, &key.to_string())
        .map_err(ApiError::internal)?;
    let event = match &joined {
        None => IncidentEvent {
            key,
            phase: IncidentPhase::Opened,
            at,
            kind: RuleKind::CitizenReport,
            severity: Severity::Warning,
            camera_name: format!("Phản ánh: {}", cut(&report.place(), 80)),
            ward: report.ward.clone(),
            summary: summary(1, report.category_vi, &report.place(), &report.description),
            count: 1,
            snapshot: Some(photo.display().to_string()),
        },
        Some(j) => {
            // The incident as its first report opened it.
            let first = store
                .citizen_reports(&j.incident)
                .map_err(ApiError::internal)?
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::internal("an incident joined has no reports"))?
                .report;
            let place = place(first.location.as_deref(), first.lat.zip(first.lon));
            IncidentEvent {
                key: IncidentKey {
                    camera: CameraId::new(CITIZEN_CAMERA),
                    rule: RuleKind::CitizenReport.as_str().into(),
                    zone: first.zone,
                    episode: first.at,
                },
                phase: IncidentPhase::Updated,
                at,
                kind: RuleKind::CitizenReport,
                severity: Severity::Warning,
                camera_name: format!("Phản ánh: {}", cut(&place, 80)),
                ward: first.ward,
                summary: summary(j.reports, report.category_vi, &place, &report.description),
                count: j.reports,
                snapshot: None,
            }
        }
    };
    let incident = event.key.to_string();
    if let Some(j) = &joined
        && j.incident != incident
    {
        return Err(ApiError::internal(format!(
            "joined incident {} but rebuilt its key as {incident}",
            j.incident
        )));
    }
    if let Err(why) = submit(event) {
        // Not handed over: take the report back so that the next one is not counted into an incident the
        // pipeline never heard of.
        if let Err(e) = store.withdraw_citizen_report(report_id) {
            tracing::error!(error = %e, report_id, "report not handed over and not withdrawn");
        }
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the report was not taken: {why}"),
        ));
    }
    tracing::info!(report_id, %incident, joined = joined.is_some(), ward = %report.ward, category = report.category, "citizen report filed");
    Ok(Filed {
        report_id,
        incident,
        duplicate_of_open: joined.is_some(),
    })
}

/// Closes citizen-report incidents with no new report for [`CLOSE_AFTER_MS`], until the server stops.
pub(super) async fn close_idle(state: AppState) {
    let Some(submit) = state.ctx.submit.clone() else {
        return;
    };
    let mut stopping = state.stopping.clone();
    // Closes handed over but not yet recorded by the sink: not handed over twice.
    let mut handed: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(CLOSE_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        let db = state.ctx.db_path.clone();
        let now = state.ctx.clock.now();
        let idle = tokio::task::spawn_blocking(move || {
            Store::open(&db)?.idle_citizen_incidents(now.plus_ms(-CLOSE_AFTER_MS))
        })
        .await;
        let idle = match idle {
            Ok(Ok(events)) => events,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot look for idle citizen-report incidents");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "idle citizen-report sweep failed");
                continue;
            }
        };
        let open: HashSet<String> = idle.iter().map(|e| e.key.to_string()).collect();
        handed.retain(|k| open.contains(k));
        let due: Vec<IncidentEvent> = idle
            .into_iter()
            .filter(|e| !handed.contains(&e.key.to_string()))
            .map(|e| IncidentEvent {
                phase: IncidentPhase::Closed,
                at: now.max(e.at),
                summary: format!(
                    "tự đóng sau {} giờ không có phản ánh mới ({} phản ánh)",
                    CLOSE_AFTER_MS / 3_600_000,
                    e.count
                ),
                snapshot: None,
                ..e
            })
            .collect();
        if due.is_empty() {
            continue;
        }
        let submit = submit.clone();
        let done = tokio::task::spawn_blocking(move || {
            due.into_iter()
                .filter_map(|e| {
                    let key = e.key.to_string();
                    match submit(e) {
                        Ok(()) => {
                            tracing::info!(incident = %key, "citizen-report incident closed: no new report for 2 h");
                            Some(key)
                        }
                        Err(why) => {
                            tracing::warn!(incident = %key, %why, "citizen-report incident not closed yet");
                            None
                        }
                    }
                })
                .collect::<Vec<_>>()
        })
        .await;
        if let Ok(keys) = done {
            handed.extend(keys);
        }
    }
}

/// Token buckets per client, bounded: when full, clients whose bucket has refilled (as good as new) are
/// forgotten first, then the longest idle.
struct Limiter {
    burst: f64,
    per_sec: f64,
    clients: HashMap<(String, Option<IpAddr>), Bucket>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Limiter {
    fn new(limits: &ReportLimits) -> Self {
        Self {
            burst: f64::from(limits.burst.max(1)),
            per_sec: f64::from(limits.per_hour.max(1)) / 3600.0,
            clients: HashMap::new(),
        }
    }

    /// Takes one report from `client`'s bucket, or says how long until there is one.
    fn take(&mut self, client: (String, Option<IpAddr>), now: Instant) -> Result<(), Duration> {
        if !self.clients.contains_key(&client) && self.clients.len() >= MAX_CLIENTS {
            self.evict(now);
        }
        let burst = self.burst;
        let b = self.clients.entry(client).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * self.per_sec;
        b.tokens = (b.tokens + refill).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_sec))
        }
    }

    fn evict(&mut self, now: Instant) {
        let (burst, per_sec) = (self.burst, self.per_sec);
        self.clients.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_sec < burst
        });
        while self.clients.len() >= MAX_CLIENTS {
            let oldest = self
                .clients
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.clients.remove(&k),
                None => break,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 90]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut out)
            .encode_image(&img)
            .unwrap();
        out
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 90]));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    fn form() -> Form {
        Form {
            photo: Some(jpeg(32, 24)),
            ward: Some(" bến nghé ".into()),
            location: Some("12 Lê Lợi".into()),
            lat: None,
            lon: None,
            category: Some("Parking".into()),
            description: Some("ô tô đỗ chắn lối vào chợ".into()),
            phone: Some("0901 234 567".into()),
        }
    }

    fn err(r: Result<Report, ApiError>) -> (u16, String) {
        let e = r.unwrap_err();
        (e.status.as_u16(), e.message)
    }

    const WARDS: [&str; 2] = ["Bến Nghé", "Đa Kao"];

    fn wards() -> Vec<String> {
        WARDS.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn a_good_report_takes_the_districts_spelling_and_a_normalised_phone() {
        let r = validate(form(), &wards()).unwrap();
        assert_eq!(r.ward, "Bến Nghé");
        assert_eq!(r.ward_slug, "ben-nghe");
        assert_eq!(r.category, "parking");
        assert_eq!(r.phone.as_deref(), Some("+84901234567"));
        assert_eq!(r.format, image::ImageFormat::Jpeg);
        // Without cameras any ward is taken as written.
        assert_eq!(validate(form(), &[]).unwrap().ward, "bến nghé");
    }

    #[test]
    fn each_bad_field_is_named() {
        let with = |f: fn(&mut Form)| {
            let mut x = form();
            f(&mut x);
            err(validate(x, &wards()))
        };
        assert_eq!(with(|f| f.photo = None).0, 422);
        assert_eq!(
            with(|f| f.photo = Some(b"hello, not a photo".to_vec())).0,
            415
        );
        // Right magic, broken header.
        assert_eq!(
            with(|f| f.photo = Some(vec![0xFF, 0xD8, 0xFF, 0, 1, 2, 3, 4, 5])).0,
            415
        );
        let (s, m) = with(|f| f.ward = None);
        assert_eq!((s, m.contains("`ward`")), (422, true), "{m}");
        let (s, m) = with(|f| f.ward = Some("Tân Định".into()));
        assert_eq!(s, 422);
        assert!(m.contains("Bến Nghé, Đa Kao"), "{m}");
        assert!(
            with(|f| f.ward = Some("x".repeat(101)))
                .1
                .contains("`ward`")
        );
        assert!(with(|f| f.location = None).1.contains("`location`"));
        assert!(
            with(|f| f.lat = Some("10.7".into()))
                .1
                .contains("`lat` and `lon`")
        );
        let (s, m) = with(|f| f.category = Some("graffiti".into()));
        assert_eq!(s, 422);
        assert!(m.contains("crowding, vending, encroachment"), "{m}");
        assert!(
            with(|f| f.description = Some("x".repeat(2001)))
                .1
                .contains("`description`")
        );
        assert!(
            with(|f| f.description = Some("  ".into()))
                .1
                .contains("`description`")
        );
        assert!(
            with(|f| f.phone = Some("12345".into()))
                .1
                .contains("`phone`")
        );
        // Coordinates instead of a text location, in range only.
        let mut f = form();
        f.location = None;
        f.lat = Some("10.7769".into());
        f.lon = Some("106.7009".into());
        let r = validate(f, &wards()).unwrap();
        assert_eq!(r.place(), "10.77690, 106.70090");
        let mut f = form();
        f.lat = Some("91".into());
        f.lon = Some("106".into());
        assert!(err(validate(f, &wards())).1.contains("`lat`"));
        let mut f = form();
        f.lat = Some("10".into());
        f.lon = Some("NaN".into());
        assert!(err(validate(f, &wards())).1.contains("`lon`"));
    }

    #[test]
    fn png_is_taken_and_reencoded_as_jpeg() {
        let mut f = form();
        f.photo = Some(png(40, 30));
        let r = validate(f, &wards()).unwrap();
        assert_eq!(r.format, image::ImageFormat::Png);
        let jpeg = png_to_jpeg(&r.photo).unwrap();
        assert_eq!(
            photo_header(&jpeg).unwrap(),
            (image::ImageFormat::Jpeg, 40, 30)
        );
    }

    #[test]
    fn slugs_are_ascii() {
        assert_eq!(ward_slug("Bến Nghé"), "ben-nghe");
        assert_eq!(ward_slug("  Phường 12 (Q. Gò Vấp) "), "phuong-12-q-go-vap");
        assert_eq!(ward_slug("Đa Kao"), "da-kao");
        assert_eq!(ward_slug("!!"), "");
    }

    #[test]
    fn summaries_count_reports_and_hide_phone_numbers() {
        assert_eq!(
            summary(
                3,
                "đỗ xe sai quy định",
                "12 Lê Lợi",
                "gọi tôi 0901 234 567 nhé, xe số 29"
            ),
            "3 người dân phản ánh đỗ xe sai quy định tại 12 Lê Lợi: gọi tôi … nhé, xe số 29"
        );
        assert_eq!(
            summary(1, "xả rác", "chợ", "+84 90 123 4567"),
            "1 người dân phản ánh xả rác tại chợ: …"
        );
        let long = summary(1, "xả rác", "chợ", &"a".repeat(500));
        assert!(long.chars().count() < 200 && long.ends_with('…'), "{long}");
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let mut l = Limiter::new(&ReportLimits {
            burst: 5,
            per_hour: 60,
        });
        let t0 = Instant::now();
        let me = || ("kiosk".to_string(), Some(IpAddr::from([10, 0, 0, 1])));
        for _ in 0..5 {
            assert_eq!(l.take(me(), t0), Ok(()));
        }
        let wait = l.take(me(), t0).unwrap_err();
        assert!((59..=60).contains(&wait.as_secs()), "{wait:?}");
        // Another client (other token, or other address) has its own bucket.
        assert_eq!(
            l.take(("kiosk".into(), Some(IpAddr::from([10, 0, 0, 2]))), t0),
            Ok(())
        );
        assert_eq!(
            l.take(("app".into(), Some(IpAddr::from([10, 0, 0, 1]))), t0),
            Ok(())
        );
        // One a minute after that.
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(l.take(me(), t1), Ok(()));
        assert!(l.take(me(), t1).is_err());
        // Ten minutes idle refill the burst, not more.
        let t2 = t1 + Duration::from_secs(600);
        for _ in 0..5 {
            assert_eq!(l.take(me(), t2), Ok(()));
        }
        assert!(l.take(me(), t2).is_err());
    }

    #[test]
    fn the_limiter_forgets_clients_and_stays_bounded() {
        let mut l = Limiter::new(&ReportLimits::default());
        let t0 = Instant::now();
        let c = |i: u32| (format!("c{i}"), Some(IpAddr::from(i.to_be_bytes())));
        for i in 0..MAX_CLIENTS as u32 + 500 {
            let _ = l.take(c(i), t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(l.clients.len() <= MAX_CLIENTS);
        // The newest client is still limited by what it spent.
        let last = MAX_CLIENTS as u32 + 499;
        assert!(l.clients.contains_key(&c(last)));
    }
}
