//! Zones: polygons in frame fractions (0–1), so they survive a change of resolution.

#[derive(Debug, Clone, PartialEq)]
pub struct Polygon {
    pub points: Vec<(f32, f32)>,
}

impl Polygon {
    pub fn new(points: &[[f32; 2]]) -> Self {
        Self {
            points: points.iter().map(|&[x, y]| (x, y)).collect(),
        }
    }

    /// Even-odd ray casting; points on the boundary may fall either way.
    pub fn contains(&self, (x, y): (f32, f32)) -> bool {
        let pts = &self.points;
        let mut inside = false;
        let mut j = pts.len() - 1;
        for i in 0..pts.len() {
            let (xi, yi) = pts[i];
            let (xj, yj) = pts[j];
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
            j = i;
        }
        inside
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concave_polygon() {
        // An L shape: the notch at the top right is outside.
        let l = Polygon::new(&[
            [0.0, 0.0],
            [0.5, 0.0],
            [0.5, 0.5],
            [1.0, 0.5],
            [1.0, 1.0],
            [0.0, 1.0],
        ]);
        assert!(l.contains((0.25, 0.25)));
        assert!(l.contains((0.75, 0.75)));
        assert!(!l.contains((0.75, 0.25)));
        assert!(!l.contains((1.5, 0.5)));
    }
}
