//! Wording of notices: Vietnamese SMS from a configurable template, e-mail (plain text and HTML) and the
//! webhook's JSON. Rendered when the notice is decided and stored with each delivery, so what was sent can
//! always be read back.

use serde_json::json;

use crate::types::Timestamp;

use super::gsm;
use crate::alert::config::SmsConfig;
use crate::alert::model::{Alert, HeldAlert, NoticeKind, NoticePayload};

fn fill(template: &str, value: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                out.push_str(&value(&after[..close]));
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// A rule family in the operations centre's words.
pub(crate) fn rule_name(kind: &str) -> &str {
    match crate::types::RuleKind::parse(kind) {
        Some(k) => k.title_vi(),
        None => kind,
    }
}

/// `HH:MM DD/MM` in local time.
pub(crate) fn local_time(t: Timestamp, offset_minutes: i32) -> String {
    // Times come back from the database: saturate at the ends of time, and read the fields from the end
    // of the text, as the year before them may have any number of digits.
    let local = Timestamp(t.0.saturating_add(i64::from(offset_minutes) * 60_000));
    let s = local.to_rfc3339();
    let tail = s.get(s.len().saturating_sub(15)..).unwrap_or_default(); // "MM-DDTHH:MM:SSZ"
    let field = |r: std::ops::Range<usize>| tail.get(r).unwrap_or("??");
    format!("{} {}/{}", field(6..11), field(3..5), field(0..2))
}

pub(crate) fn snapshot_link(a: &Alert, base: Option<&str>) -> Option<String> {
    Some(format!("{}{}", base?, a.snapshot_token.as_deref()?))
}

/// Everything the wording needs besides the payload.
pub(crate) struct Ctx<'a> {
    pub notice_id: i64,
    pub offset_minutes: i32,
    pub link_base: Option<&'a str>,
    pub created_at: Timestamp,
}

fn title(p: &NoticePayload) -> &'static str {
    match p.firing.first() {
        Some(a) if a.severity == crate::types::Severity::Critical => "[KHẨN]",
        Some(_) => "[CẢNH BÁO]",
        None => "[ĐÃ KẾT THÚC]",
    }
}

/// The alert a short notice speaks about: the most severe firing one, else the first resolved.
fn lead(p: &NoticePayload) -> Option<&Alert> {
    p.firing
        .iter()
        .max_by_key(|a| (a.severity, std::cmp::Reverse(a.started_at)))
        .or(p.resolved.first())
}

fn tidy(text: &str) -> String {
    let mut out = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for (from, to) in [("..", "."), (" .", "."), ("( ", "("), (" )", ")")] {
        while out.contains(from) {
            out = out.replace(from, to);
        }
    }
    out.trim().to_string()
}

/// The SMS text for one notice, within the receiver's segment budget.
pub(crate) fn sms_text(cfg: &SmsConfig, p: &NoticePayload, ctx: &Ctx<'_>) -> String {
    let finish = |text: &str| {
        if cfg.strip_diacritics {
            gsm::strip_diacritics(text)
        } else {
            text.to_string()
        }
    };
    let text = short_text(&cfg.template, p, ctx, |t| {
        gsm::segments(&finish(t)).count <= cfg.max_segments
    });
    gsm::truncate_to_segments(&finish(&text), cfg.max_segments)
}

/// The notice in one line, for the streetwatch log: the SMS wording with the default template, uncut.
pub(crate) fn log_text(p: &NoticePayload, ctx: &Ctx<'_>) -> String {
    short_text(
        &crate::alert::config::default_sms_template(),
        p,
        ctx,
        |_| true,
    )
}

/// A notice as `template` words it; a flood summary names as many held alerts as `fits` allows.
fn short_text(
    template: &str,
    p: &NoticePayload,
    ctx: &Ctx<'_>,
    fits: impl Fn(&str) -> bool,
) -> String {
    match (p.kind, lead(p)) {
        (NoticeKind::FloodSummary, _) | (_, None) => flood_sms(p, ctx, fits),
        (NoticeKind::Alerts, Some(a)) => {
            let others = p.firing.len() + p.resolved.len() - 1;
            tidy(&fill(template, |name| match name {
                "title" => title(p).to_string(),
                "rule" => rule_name(&a.kind).to_string(),
                "camera" => a.camera_name.clone(),
                "camera_id" => a.camera.clone(),
                "incident" => a.key.clone(),
                "ward" => a.ward.clone(),
                "time" => local_time(
                    if a.firing() {
                        a.started_at
                    } else {
                        a.updated_at
                    },
                    ctx.offset_minutes,
                ),
                "summary" => a.summary.clone(),
                "count" => a.count.to_string(),
                "link" => snapshot_link(a, ctx.link_base).unwrap_or_default(),
                "ref" => ctx.notice_id.to_string(),
                "more" if others > 0 => format!(" (+{others} khác)"),
                "severity" => a.severity.as_str().to_string(),
                _ => String::new(),
            }))
        }
    }
}

fn wards(p: &NoticePayload) -> String {
    p.held_by_ward
        .iter()
        .map(|(w, n)| format!("{w}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The held alerts, the first `n` named: by rule, each with its cameras, in the order they were held.
fn held_names(held: &[HeldAlert], n: usize) -> String {
    let mut by_rule: Vec<(&str, Vec<&str>)> = Vec::new();
    for h in &held[..n] {
        let rule = rule_name(&h.kind);
        match by_rule.iter_mut().find(|(r, _)| *r == rule) {
            Some((_, cams)) => cams.push(&h.camera_name),
            None => by_rule.push((rule, vec![&h.camera_name])),
        }
    }
    let mut out = by_rule
        .iter()
        .map(|(rule, cams)| format!("{rule} ({})", cams.join(", ")))
        .collect::<Vec<_>>()
        .join("; ");
    if n < held.len() {
        out.push_str(&format!(" (+{} khác)", held.len() - n));
    }
    out
}

/// The flood summary, naming as many held alerts as `fits` allows (the receiver's segment budget).
fn flood_sms(p: &NoticePayload, ctx: &Ctx<'_>, fits: impl Fn(&str) -> bool) -> String {
    let head = format!(
        "[CẢNH BÁO] Chống tràn: {} thông báo khác từ {} chưa gửi ({}).",
        p.held,
        local_time(p.held_since.unwrap_or(ctx.created_at), ctx.offset_minutes),
        wards(p),
    );
    let tail = format!(" Xem trung tâm chỉ huy. #{}", ctx.notice_id);
    for n in (1..=p.held_alerts.len()).rev() {
        let text = format!("{head} Giữ lại: {}.{tail}", held_names(&p.held_alerts, n));
        if fits(&text) {
            return text;
        }
    }
    format!("{head}{tail}")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// E-mail subject, plain-text and HTML bodies, and the snapshots to attach.
pub(crate) fn email(p: &NoticePayload, ctx: &Ctx<'_>) -> serde_json::Value {
    let subject = match (p.kind, lead(p)) {
        (NoticeKind::FloodSummary, _) | (_, None) => {
            format!(
                "[streetwatch] Chống tràn: {} thông báo chưa gửi #{}",
                p.held, ctx.notice_id
            )
        }
        (NoticeKind::Alerts, Some(a)) => {
            let n = p.firing.len() + p.resolved.len();
            let more = if n > 1 {
                format!(" (+{} khác)", n - 1)
            } else {
                String::new()
            };
            format!(
                "[streetwatch] {} {}: {} (P. {}){more} #{}",
                title(p),
                rule_name(&a.kind),
                a.camera_name,
                a.ward,
                ctx.notice_id
            )
        }
    };
    let mut text = String::new();
    let mut html = String::from("<html><body style=\"font-family:sans-serif\">");
    html.push_str(&format!("<h2>{}</h2>", html_escape(&subject)));
    if p.kind == NoticeKind::FloodSummary {
        let line = format!(
            "Chống tràn: {} thông báo khác từ {} chưa được gửi. Theo phường: {}.",
            p.held,
            local_time(p.held_since.unwrap_or(ctx.created_at), ctx.offset_minutes),
            wards(p)
        );
        text.push_str(&line);
        text.push('\n');
        html.push_str(&format!("<p>{}</p>", html_escape(&line)));
        if !p.held_alerts.is_empty() {
            text.push_str("Giữ lại:\n");
            html.push_str("<p>Giữ lại:</p><ul>");
            for h in &p.held_alerts {
                let item = format!("{}: {} ({})", rule_name(&h.kind), h.camera_name, h.camera);
                text.push_str(&format!("- {item}\n"));
                html.push_str(&format!("<li>{}</li>", html_escape(&item)));
            }
            html.push_str("</ul>");
        }
    }
    for (heading, alerts) in [("Đang diễn ra", &p.firing), ("Đã kết thúc", &p.resolved)] {
        if alerts.is_empty() {
            continue;
        }
        text.push_str(&format!("{heading}:\n"));
        html.push_str(&format!(
            "<h3>{heading}</h3><table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\">\
             <tr><th>Thời gian</th><th>Camera</th><th>Phường</th><th>Loại</th><th>Mức</th><th>Mô tả</th><th>Ảnh</th></tr>"
        ));
        for a in alerts.iter() {
            let link = snapshot_link(a, ctx.link_base);
            text.push_str(&format!(
                "- {} | {} ({}) | P. {} | {} | {} | {}{}\n  mã sự cố: {}\n",
                local_time(a.started_at, ctx.offset_minutes),
                a.camera_name,
                a.camera,
                a.ward,
                rule_name(&a.kind),
                a.severity.as_str(),
                a.summary,
                link.as_ref()
                    .map(|l| format!(" | ảnh: {l}"))
                    .unwrap_or_default(),
                a.key
            ));
            html.push_str(&format!(
                "<tr><td>{}</td><td>{} <small>({})</small></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                local_time(a.started_at, ctx.offset_minutes),
                html_escape(&a.camera_name),
                html_escape(&a.camera),
                html_escape(&a.ward),
                rule_name(&a.kind),
                a.severity.as_str(),
                html_escape(&a.summary),
                link.map(|l| format!("<a href=\"{0}\">{0}</a>", html_escape(&l))).unwrap_or_default()
            ));
        }
        html.push_str("</table>");
    }
    text.push_str(&format!("\nThông báo #{} — streetwatch\n", ctx.notice_id));
    html.push_str(&format!(
        "<p><small>Thông báo #{} — streetwatch</small></p></body></html>",
        ctx.notice_id
    ));
    // At most three snapshots: enough to see the scene, small enough for a phone's mail client.
    let attachments: Vec<&str> = p
        .firing
        .iter()
        .filter_map(|a| a.snapshot.as_deref())
        .take(3)
        .collect();
    json!({ "subject": subject, "text": text, "html": html, "attachments": attachments })
}

/// The webhook's JSON document.
pub(crate) fn webhook(p: &NoticePayload, ctx: &Ctx<'_>) -> serde_json::Value {
    let alert = |a: &Alert| {
        json!({
            "key": a.key, "status": if a.firing() { "firing" } else { "resolved" },
            "camera": a.camera, "camera_name": a.camera_name, "ward": a.ward, "rule": a.rule, "zone": a.zone,
            "kind": a.kind, "severity": a.severity, "summary": a.summary, "count": a.count,
            "started_at": a.started_at.to_rfc3339(), "ended_at": a.ended_at.map(|t| t.to_rfc3339()),
            "snapshot_url": snapshot_link(a, ctx.link_base),
        })
    };
    json!({
        "notice_id": ctx.notice_id,
        "kind": p.kind.as_str(),
        "status": if p.firing.is_empty() { "resolved" } else { "firing" },
        "created_at": ctx.created_at.to_rfc3339(),
        "group_key": p.group_key,
        "group_labels": p.group_labels,
        "alerts": p.firing.iter().chain(p.resolved.iter()).map(alert).collect::<Vec<_>>(),
        "held": p.held,
        "held_by_ward": p.held_by_ward,
        "held_alerts": p.held_alerts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::config::AlertConfig;
    use crate::types::Severity;
    use std::collections::BTreeMap;

    fn alert() -> Alert {
        Alert {
            key: "d1-nh-03/plaza-crowd/plaza/1795000000000".into(),
            camera: "d1-nh-03".into(),
            camera_name: "Nguyễn Huệ / Lê Lợi".into(),
            ward: "Bến Nghé".into(),
            rule: "plaza-crowd".into(),
            zone: "plaza".into(),
            kind: "crowding".into(),
            severity: Severity::Warning,
            started_at: Timestamp(1_795_000_000_000),
            updated_at: Timestamp(1_795_000_000_000),
            ended_at: None,
            summary: "7 người trong vùng 45 giây".into(),
            count: 7,
            snapshot: None,
            snapshot_token: Some("3fa2c1d0e9b8".into()),
        }
    }

    fn sms_cfg(strip: bool) -> SmsConfig {
        let toml = format!(
            "[[receivers]]\nname = \"p\"\n[receivers.sms]\nurl = \"http://x/\"\nusername = \"u\"\npassword = \"p\"\n\
             numbers = [\"0901234567\"]\nstrip_diacritics = {strip}\n"
        );
        AlertConfig::from_toml(&toml).unwrap().receivers[0]
            .sms
            .clone()
            .unwrap()
    }

    fn payload() -> NoticePayload {
        NoticePayload::alerts("g".into(), BTreeMap::new(), vec![alert()], vec![])
    }

    #[test]
    fn vietnamese_sms_and_its_stripped_form_fits_one_segment() {
        let ctx = Ctx {
            notice_id: 42,
            offset_minutes: 420,
            link_base: Some("https://sw.q1.vn/s/"),
            created_at: Timestamp(1_795_000_000_000),
        };
        let full = sms_text(&sms_cfg(false), &payload(), &ctx);
        assert_eq!(
            full,
            "[CẢNH BÁO] Tụ tập đông người: Nguyễn Huệ / Lê Lợi (P. Bến Nghé) 18:06 18/11. \
             7 người trong vùng 45 giây. https://sw.q1.vn/s/3fa2c1d0e9b8 #42"
        );
        assert_eq!(gsm::segments(&full).alphabet, gsm::Alphabet::Ucs2);
        assert_eq!(gsm::segments(&full).count, 3);
        let plain = sms_text(&sms_cfg(true), &payload(), &ctx);
        assert!(
            plain.starts_with("[CANH BAO] Tu tap dong nguoi: Nguyen Hue / Le Loi (P. Ben Nghe)"),
            "{plain}"
        );
        let s = gsm::segments(&plain);
        assert_eq!((s.alphabet, s.count), (gsm::Alphabet::Gsm7, 1), "{plain}");
    }

    #[test]
    fn incident_placeholder_names_the_incident_whichever_the_notice_is() {
        let mut cfg = sms_cfg(true);
        cfg.template = "{title} {incident}".into();
        let ctx = Ctx {
            notice_id: 7,
            offset_minutes: 420,
            link_base: None,
            created_at: Timestamp(1_795_000_000_000),
        };
        assert_eq!(
            sms_text(&cfg, &payload(), &ctx),
            "[CANH BAO] d1-nh-03/plaza-crowd/plaza/1795000000000"
        );
        let mut ended = alert();
        ended.ended_at = Some(Timestamp(1_795_000_060_000));
        let resolved = NoticePayload::alerts("g".into(), BTreeMap::new(), vec![], vec![ended]);
        assert_eq!(
            sms_text(&cfg, &resolved, &ctx),
            "[DA KET THUC] d1-nh-03/plaza-crowd/plaza/1795000000000"
        );
    }

    #[test]
    fn local_time_reads_any_timestamp_read_back() {
        // 10000-01-01T00:00:00Z: a five-digit year moved every field the text was cut at.
        assert_eq!(local_time(Timestamp(253_402_300_800_000), 0), "00:00 01/01");
        assert_eq!(local_time(Timestamp(1_795_000_000_000), 420), "18:06 18/11");
        // A damaged row: the end of time plus the offset must not overflow.
        let t = local_time(Timestamp(i64::MAX), 420);
        assert_eq!((t.len(), &t[2..3], &t[8..9]), (11, ":", "/"), "{t}");
    }

    #[test]
    fn flood_summary_names_the_held_alerts_as_far_as_the_segments_allow() {
        let held = |camera_name: &str, kind: &str| HeldAlert {
            camera: camera_name.to_lowercase().replace(' ', "-"),
            camera_name: camera_name.into(),
            rule: "r".into(),
            kind: kind.into(),
        };
        let p = NoticePayload {
            kind: NoticeKind::FloodSummary,
            group_key: "flood:p".into(),
            firing: vec![],
            held: 3,
            held_since: Some(Timestamp(1_795_000_000_000)),
            held_by_ward: BTreeMap::from([("Bến Nghé".to_string(), 3)]),
            held_alerts: vec![
                held("Cam A", "crowding"),
                held("Cam B", "crowding"),
                held("Cam C", "intrusion"),
            ],
            ..payload()
        };
        let ctx = Ctx {
            notice_id: 42,
            offset_minutes: 420,
            link_base: None,
            created_at: Timestamp(1_795_000_600_000),
        };
        assert_eq!(
            sms_text(&sms_cfg(false), &p, &ctx),
            "[CẢNH BÁO] Chống tràn: 3 thông báo khác từ 18:06 18/11 chưa gửi (Bến Nghé: 3). \
             Giữ lại: Tụ tập đông người (Cam A, Cam B); Xâm nhập khu vực cấm (Cam C). Xem trung tâm chỉ huy. #42"
        );
        let mut one = sms_cfg(true);
        one.max_segments = 1;
        assert_eq!(
            sms_text(&one, &p, &ctx),
            "[CANH BAO] Chong tran: 3 thong bao khac tu 18:06 18/11 chua gui (Ben Nghe: 3). \
             Giu lai: Tu tap dong nguoi (Cam A, Cam B) (+1 khac). Xem trung tam chi huy. #42"
        );
    }
}
