//! A camera's `regions`: parts of its frame also detected on at the frame's own resolution, for small and
//! far objects (see `infer::Regions`).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::CameraConfig;

/// `regions = "zones" | "tiles" | [[x1, y1, x2, y2], …]`.
#[derive(Debug, Clone, PartialEq)]
pub enum RegionsConfig {
    /// The bounding box of each zone, padded upwards to hold the bodies of people standing in it.
    Zones,
    /// The whole frame, in overlapping tiles.
    Tiles,
    /// Rectangles in frame fractions (0–1): left, top, right, bottom.
    Rects(Vec<[f32; 4]>),
}

/// Below this frame width a tile is the whole frame: regions would only repeat the whole-frame pass.
pub const MIN_WIDTH: u32 = 640;

impl<'de> Deserialize<'de> for RegionsConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RegionsConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#""zones", "tiles" or a list of [x1, y1, x2, y2] in frame fractions"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RegionsConfig, E> {
                match v {
                    "zones" => Ok(RegionsConfig::Zones),
                    "tiles" => Ok(RegionsConfig::Tiles),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RegionsConfig, A::Error> {
                let mut rects = Vec::new();
                while let Some(r) = seq.next_element::<[f32; 4]>()? {
                    rects.push(r);
                }
                Ok(RegionsConfig::Rects(rects))
            }
        }
        d.deserialize_any(V)
    }
}

/// Checks a camera's regions: the message for a mistake, or nothing.
pub fn check(cam: &CameraConfig, regions: &RegionsConfig) -> Result<(), String> {
    match regions {
        RegionsConfig::Zones if cam.zones.is_empty() => {
            return Err(r#""zones" needs at least one zone on this camera"#.into());
        }
        RegionsConfig::Rects(rects) if rects.is_empty() => {
            return Err(
                "an empty list: leave `regions` out to detect on the whole frame only".into(),
            );
        }
        RegionsConfig::Rects(rects) => {
            for r @ [x1, y1, x2, y2] in rects {
                if !r.iter().all(|v| (0.0..=1.0).contains(v)) || x1 >= x2 || y1 >= y2 {
                    return Err(format!(
                        "{r:?} is not [x1, y1, x2, y2] with 0 ≤ x1 < x2 ≤ 1 and 0 ≤ y1 < y2 ≤ 1 (fractions of the frame)"
                    ));
                }
            }
        }
        RegionsConfig::Zones | RegionsConfig::Tiles => {}
    }
    if cam.width < MIN_WIDTH {
        return Err(format!(
            "regions crop the frame at the camera's `width` ({} px): set it to the stream's own width, at least {MIN_WIDTH} (e.g. 1280 or 1920)",
            cam.width
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const CAMERA: &str = r#"
[[cameras]]
id = "cam-1"
url = "rtsp://10.1.2.3/stream1"
width = 1920
REGIONS
[[cameras.zones]]
id = "kerb"
polygon = [[0.1, 0.5], [0.9, 0.5], [0.9, 0.9]]
"#;

    fn parse(regions: &str) -> Result<Config, String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        Config::parse(&CAMERA.replace("REGIONS", regions), "test.toml", dir)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_three_forms_parse() {
        let get = |r: &str| {
            parse(r).unwrap().cameras[0]
                .regions
                .clone()
                .map(|s| s.into_inner())
        };
        assert_eq!(get(""), None);
        assert_eq!(get(r#"regions = "zones""#), Some(RegionsConfig::Zones));
        assert_eq!(get(r#"regions = "tiles""#), Some(RegionsConfig::Tiles));
        assert_eq!(
            get("regions = [[0.0, 0.2, 0.5, 0.6], [0.5, 0.2, 1, 0.6]]"),
            Some(RegionsConfig::Rects(vec![
                [0.0, 0.2, 0.5, 0.6],
                [0.5, 0.2, 1.0, 0.6]
            ]))
        );
    }

    #[test]
    fn mistakes_are_located() {
        // `regions` is on line 6 of CAMERA (which starts with a newline), its value at column 11.
        let m = parse(r#"regions = "zone""#).unwrap_err();
        assert!(m.starts_with("test.toml:6:11: "), "{m}");
        assert!(m.contains(r#"expected "zones", "tiles" or a list"#), "{m}");
        let m = parse("regions = [[0.5, 0.2, 0.3, 0.6]]").unwrap_err();
        assert!(
            m.starts_with(
                "test.toml:6:11: cameras[0].regions: [0.5, 0.2, 0.3, 0.6] is not [x1, y1, x2, y2]"
            ),
            "{m}"
        );
        let m = parse("regions = [[0.0, 0.2, 1.5, 0.6]]").unwrap_err();
        assert!(
            m.contains("cameras[0].regions: [0.0, 0.2, 1.5, 0.6] is not"),
            "{m}"
        );
        let m = parse("regions = []").unwrap_err();
        assert!(m.contains("cameras[0].regions: an empty list"), "{m}");
        let m = CAMERA
            .replace("width = 1920\n", "")
            .replace("REGIONS", r#"regions = "tiles""#);
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let m = Config::parse(&m, "test.toml", dir).unwrap_err().to_string();
        assert!(
            m.starts_with("test.toml:5:11: cameras[0].regions: regions crop the frame at the camera's `width` (416 px)"),
            "{m}"
        );
        let no_zones = CAMERA
            .split("[[cameras.zones]]")
            .next()
            .unwrap()
            .replace("REGIONS", r#"regions = "zones""#);
        let m = Config::parse(&no_zones, "test.toml", dir)
            .unwrap_err()
            .to_string();
        assert!(
            m.contains(r#"cameras[0].regions: "zones" needs at least one zone"#),
            "{m}"
        );
    }
}
