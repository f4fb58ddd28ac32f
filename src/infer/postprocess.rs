//! From raw output tensors to detections in frame coordinates: decode the layout, threshold,
//! class-aware non-maximum suppression, undo the letterbox.

use serde::Serialize;

use super::manifest::OutputLayout;
use super::preprocess::Placement;

/// An axis-aligned box in fractions (0–1) of the frame's width and height.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    pub fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }
    pub fn iou(&self, o: &BBox) -> f32 {
        let iw = (self.x2.min(o.x2) - self.x1.max(o.x1)).max(0.0);
        let ih = (self.y2.min(o.y2) - self.y1.max(o.y1)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + o.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
    /// Where the object touches the ground: rules place an object by this point.
    pub fn bottom_centre(&self) -> (f32, f32) {
        ((self.x1 + self.x2) / 2.0, self.y2)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Detection {
    pub class: u16,
    pub score: f32,
    pub bbox: BBox,
}

pub struct DecodeParams {
    pub layout: OutputLayout,
    pub classes: usize,
    pub score_threshold: f32,
    pub iou_threshold: f32,
    pub max_detections: usize,
}

/// One image's output is not `anchors` anchors of the layout's values (a model whose output shape was left
/// open at start-up and turned out not to fit the manifest).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{got} values for {anchors} anchors of layout `{layout}` with {classes} classes, which need {per_anchor} values each ({needed} in all)"
)]
pub struct DecodeError {
    pub layout: OutputLayout,
    pub classes: usize,
    pub anchors: usize,
    pub per_anchor: usize,
    pub needed: usize,
    pub got: usize,
}

/// Decodes one batch item. `data` is that item's slice of the output, `anchors` its anchor count; an
/// error, and nothing decoded, unless `data` holds exactly `anchors` anchors of the layout's values.
/// Detections are appended to `out` (cleared first), best first.
pub fn decode(
    p: &DecodeParams,
    data: &[f32],
    anchors: usize,
    place: &Placement,
    out: &mut Vec<Detection>,
) -> Result<(), DecodeError> {
    out.clear();
    let c = p.classes;
    let per_anchor = p.layout.values_per_anchor(c);
    let needed = anchors.checked_mul(per_anchor);
    if needed != Some(data.len()) {
        return Err(DecodeError {
            layout: p.layout,
            classes: c,
            anchors,
            per_anchor,
            needed: needed.unwrap_or(usize::MAX),
            got: data.len(),
        });
    }
    let push = |out: &mut Vec<Detection>,
                class: usize,
                score: f32,
                (x1, y1, x2, y2): (f32, f32, f32, f32)| {
        let (x1, y1) = place.to_frame(x1, y1);
        let (x2, y2) = place.to_frame(x2, y2);
        out.push(Detection {
            class: class as u16,
            score,
            bbox: BBox { x1, y1, x2, y2 },
        });
    };
    match p.layout {
        OutputLayout::BoxesXyxyScores => {
            for row in data.chunks_exact(4 + c).take(anchors) {
                let (class, score) = best(&row[4..]);
                if score >= p.score_threshold {
                    push(out, class, score, (row[0], row[1], row[2], row[3]));
                }
            }
        }
        OutputLayout::Yolov5 => {
            for row in data.chunks_exact(5 + c).take(anchors) {
                let (class, cls) = best(&row[5..]);
                let score = row[4] * cls;
                if score >= p.score_threshold {
                    push(out, class, score, cxcywh(row[0], row[1], row[2], row[3]));
                }
            }
        }
        OutputLayout::Yolov8 => {
            // Channel-major: value k of anchor a is at k * anchors + a.
            for a in 0..anchors {
                let (mut class, mut score) = (0, f32::MIN);
                for k in 0..c {
                    let s = data[(4 + k) * anchors + a];
                    if s > score {
                        (class, score) = (k, s);
                    }
                }
                if score >= p.score_threshold {
                    let v = |k: usize| data[k * anchors + a];
                    push(out, class, score, cxcywh(v(0), v(1), v(2), v(3)));
                }
            }
        }
    }
    nms(out, p.iou_threshold, p.max_detections);
    Ok(())
}

fn best(scores: &[f32]) -> (usize, f32) {
    scores
        .iter()
        .copied()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, s)| if s > b.1 { (i, s) } else { b })
}

fn cxcywh(cx: f32, cy: f32, w: f32, h: f32) -> (f32, f32, f32, f32) {
    (cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0)
}

/// Class-aware greedy NMS in place: keeps the best box of each overlapping same-class cluster.
pub fn nms(dets: &mut Vec<Detection>, iou_threshold: f32, max: usize) {
    dets.sort_unstable_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept = 0;
    for i in 0..dets.len() {
        if kept == max {
            break;
        }
        let d = dets[i];
        if dets[..kept]
            .iter()
            .all(|k| k.class != d.class || k.bbox.iou(&d.bbox) <= iou_threshold)
        {
            dets[kept] = d;
            kept += 1;
        }
    }
    dets.truncate(kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(layout: OutputLayout) -> DecodeParams {
        DecodeParams {
            layout,
            classes: 2,
            score_threshold: 0.3,
            iou_threshold: 0.5,
            max_detections: 100,
        }
    }
    const PLACE: Placement = Placement {
        scale: 0.5,
        pad_x: 0.0,
        pad_y: 10.0,
        image_w: 200,
        image_h: 100,
        origin_x: 0,
        origin_y: 0,
        frame_w: 200,
        frame_h: 100,
    };

    #[test]
    fn xyxy_layout_maps_back_to_frame_fractions() {
        // One confident class-1 box, one below threshold.
        let data = [
            20.0, 20.0, 60.0, 40.0, 0.1, 0.9, 0.0, 0.0, 1.0, 1.0, 0.2, 0.1,
        ];
        let mut out = Vec::new();
        decode(
            &params(OutputLayout::BoxesXyxyScores),
            &data,
            2,
            &PLACE,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 1);
        let d = out[0];
        assert_eq!((d.class, d.score), (1, 0.9));
        // x: 20/0.5/200 = 0.2; y: (20-10)/0.5/100 = 0.2.
        assert_eq!(
            d.bbox,
            BBox {
                x1: 0.2,
                y1: 0.2,
                x2: 0.6,
                y2: 0.6
            }
        );
    }

    #[test]
    fn yolov8_layout_is_channel_major() {
        // Two anchors; rows: cx, cy, w, h, class0, class1.
        let data = [
            40.0, 0.0, 30.0, 0.0, 40.0, 0.0, 20.0, 0.0, 0.8, 0.1, 0.1, 0.2,
        ];
        let mut out = Vec::new();
        decode(&params(OutputLayout::Yolov8), &data, 2, &PLACE, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].class, 0);
        assert_eq!(
            out[0].bbox,
            BBox {
                x1: 0.2,
                y1: 0.2,
                x2: 0.6,
                y2: 0.6
            }
        );
    }

    #[test]
    fn yolov5_multiplies_objectness() {
        let data = [40.0, 30.0, 40.0, 20.0, 0.5, 0.9, 0.1];
        let mut out = Vec::new();
        decode(&params(OutputLayout::Yolov5), &data, 1, &PLACE, &mut out).unwrap();
        assert!((out[0].score - 0.45).abs() < 1e-6);
    }

    #[test]
    fn data_that_is_not_the_anchors_of_the_layout_is_an_error_not_a_panic() {
        // Each layout with 2 classes: 6 or 7 values per anchor. One value short, one too many, and an
        // anchor count whose product overflows: an error each, nothing decoded.
        for (layout, per_anchor) in [
            (OutputLayout::BoxesXyxyScores, 6),
            (OutputLayout::Yolov8, 6),
            (OutputLayout::Yolov5, 7),
        ] {
            let mut out = vec![Detection {
                class: 0,
                score: 1.0,
                bbox: PLACE_BOX,
            }];
            for (anchors, len) in [
                (3, 3 * per_anchor - 1),
                (3, 3 * per_anchor + 1),
                (usize::MAX, 6),
            ] {
                let data = vec![0.9; len];
                let e = decode(&params(layout), &data, anchors, &PLACE, &mut out).unwrap_err();
                assert_eq!((e.got, e.per_anchor), (len, per_anchor), "{layout}: {e}");
                assert!(out.is_empty(), "{layout}");
            }
            decode(
                &params(layout),
                &vec![0.9; 3 * per_anchor],
                3,
                &PLACE,
                &mut out,
            )
            .unwrap();
        }
    }

    const PLACE_BOX: BBox = BBox {
        x1: 0.0,
        y1: 0.0,
        x2: 1.0,
        y2: 1.0,
    };

    #[test]
    fn nms_is_class_aware() {
        let b = BBox {
            x1: 0.0,
            y1: 0.0,
            x2: 1.0,
            y2: 1.0,
        };
        let shifted = BBox { x1: 0.05, ..b };
        let mut dets = vec![
            Detection {
                class: 0,
                score: 0.6,
                bbox: shifted,
            },
            Detection {
                class: 0,
                score: 0.9,
                bbox: b,
            },
            Detection {
                class: 1,
                score: 0.5,
                bbox: b,
            },
        ];
        nms(&mut dets, 0.5, 10);
        assert_eq!(
            dets.iter().map(|d| (d.class, d.score)).collect::<Vec<_>>(),
            vec![(0, 0.9), (1, 0.5)]
        );
    }
}
