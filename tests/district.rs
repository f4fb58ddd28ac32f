//! The district configuration: `pipelines/district-1100.toml` is exactly what `scripts/district.py` makes
//! of `fixtures/district-1100.csv` (so the two never drift), and it is a valid configuration of District 1.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::process::Command;

use streetwatch::config::{Config, SourceUrl};
use support::root;

const CSV: &str = "fixtures/district-1100.csv";
const TOML: &str = "pipelines/district-1100.toml";

/// Runs `scripts/district.py ARGS` in the checkout; its stdout, or the failure with stderr.
fn district(args: &[&str]) -> Result<String, String> {
    let out = Command::new("python3")
        .arg("scripts/district.py")
        .args(args)
        .current_dir(root())
        .output()
        .expect("python3 runs");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("UTF-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn committed_files_are_what_the_script_makes() {
    let csv = std::fs::read_to_string(root().join(CSV)).unwrap();
    assert!(
        district(&["sample"]).unwrap() == csv,
        "{CSV} differs from `scripts/district.py sample`: regenerate it"
    );
    let toml = std::fs::read_to_string(root().join(TOML)).unwrap();
    assert!(
        district(&["toml", CSV]).unwrap() == toml,
        "{TOML} differs from `scripts/district.py toml {CSV}`: regenerate it"
    );
}

#[test]
fn the_district_config_is_district_one() {
    let config = Config::load(&root().join(TOML)).unwrap();
    assert_eq!(config.cameras.len(), 1100);
    let wards: BTreeSet<&str> = config.cameras.iter().map(|c| c.ward.as_str()).collect();
    let expected: BTreeSet<&str> = [
        "Bến Nghé",
        "Bến Thành",
        "Cầu Kho",
        "Cầu Ông Lãnh",
        "Cô Giang",
        "Đa Kao",
        "Nguyễn Cư Trinh",
        "Nguyễn Thái Bình",
        "Phạm Ngũ Lão",
        "Tân Định",
    ]
    .into();
    assert_eq!(wards, expected);
    // Each camera reads its own path of the local camera-like server, and analyses its sub-stream.
    let mut paths = HashSet::new();
    for (i, c) in config.cameras.iter().enumerate() {
        let url = c.url.get_ref().as_str();
        assert_eq!(url, format!("rtsp://127.0.0.1:8554/cam/{i}"));
        assert!(paths.insert(url.to_string()));
        let sub = c.analysis_url.as_ref().expect("a sub-stream").get_ref();
        assert_eq!(sub.as_str(), format!("{url}/sub"));
        assert!(matches!(
            SourceUrl::parse(sub, &config.base_dir),
            Ok(SourceUrl::Rtsp { .. })
        ));
        assert_eq!((c.fps, c.keyframe_only), (0.5, true));
        assert!(
            !c.zones.is_empty() && !c.rules.is_empty(),
            "{}",
            c.id.get_ref()
        );
    }
    // What a district watches: no-parking kerbs, sidewalks, crowd areas (and some closed sites, one-way
    // streets). Every zone has a rule.
    let kinds: BTreeSet<&str> = config
        .cameras
        .iter()
        .flat_map(|c| c.rules.iter().map(|r| r.kind().as_str()))
        .collect();
    for k in ["parking", "encroachment", "crowding"] {
        assert!(kinds.contains(k), "no {k} rule in {kinds:?}");
    }
    for c in &config.cameras {
        for z in &c.zones {
            assert!(
                c.rules.iter().any(|r| r.target() == z.id.get_ref()),
                "{}: zone {} has no rule",
                c.id.get_ref(),
                z.id.get_ref()
            );
        }
    }
}

#[test]
fn check_config_accepts_the_district() {
    let stdout = support::check_config_ok(Path::new(TOML));
    assert!(stdout.contains("ok — 1100 cameras"), "{stdout}");
}

#[test]
fn a_bad_row_is_named_by_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let header = "id,ward,url,zones\n";
    let cases = [
        (
            "c1,Đa Kao,rtsp://h/1,bogus:z:0,0 1,0 1,1\n",
            "zone role `bogus`",
        ),
        ("c1,Đa Kao,rtsp://h/1,kerb:z:0,0 1.5,0 1,1\n", "within 0-1"),
        ("c1,Đa Kao,rtsp://h/1,crowd:z:0,0 1,0 1,1\n", "crowd*N"),
        ("c1,Đa Kao,rtsp://h/1,nowhere\n", "neither a template"),
        ("c1,,rtsp://h/1,street\n", "id, ward and url are required"),
    ];
    for (row, message) in cases {
        let file = dir.path().join("cams.csv");
        std::fs::write(&file, format!("{header}c0,Đa Kao,rtsp://h/0,plaza\n{row}")).unwrap();
        let err = district(&["toml", file.to_str().unwrap()]).unwrap_err();
        // The bad row is the file's third line (after the header and a good row).
        assert!(
            err.contains(&format!("{}:3: ", file.display())) && err.contains(message),
            "{row:?}: {err}"
        );
    }
}
