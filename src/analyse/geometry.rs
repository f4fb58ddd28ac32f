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

/// A counting line with the direction that counts as "in".
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub a: (f32, f32),
    pub b: (f32, f32),
    /// Unit normal of the line pointing to the "in" side.
    normal: (f32, f32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossing {
    In,
    Out,
}

impl Line {
    /// `in_direction` must point across the line (validated by config).
    pub fn new(points: [[f32; 2]; 2], in_direction: [f32; 2]) -> Self {
        let (a, b) = ((points[0][0], points[0][1]), (points[1][0], points[1][1]));
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len = dx.hypot(dy).max(1e-9);
        let mut normal = (-dy / len, dx / len);
        if normal.0 * in_direction[0] + normal.1 * in_direction[1] < 0.0 {
            normal = (-normal.0, -normal.1);
        }
        Self { a, b, normal }
    }

    /// Signed distance from the line (positive on the "in" side), in frame fractions.
    pub fn side(&self, p: (f32, f32)) -> f32 {
        (p.0 - self.a.0) * self.normal.0 + (p.1 - self.a.1) * self.normal.1
    }

    /// Whether the step p → q passes between the line's end points (not beyond them).
    pub fn spans(&self, p: (f32, f32), q: (f32, f32)) -> bool {
        let (sp, sq) = (self.side(p), self.side(q));
        if sp == sq {
            return false;
        }
        // Where the step meets the line's infinite extension, as a fraction along a → b.
        let k = sp / (sp - sq);
        let m = (p.0 + (q.0 - p.0) * k, p.1 + (q.1 - p.1) * k);
        let (dx, dy) = (self.b.0 - self.a.0, self.b.1 - self.a.1);
        let u = ((m.0 - self.a.0) * dx + (m.1 - self.a.1) * dy) / (dx * dx + dy * dy);
        (0.0..=1.0).contains(&u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_sides_follow_the_in_direction() {
        // A horizontal line across the middle; "in" is up the frame.
        let l = Line::new([[0.0, 0.5], [1.0, 0.5]], [0.0, -1.0]);
        assert!(l.side((0.5, 0.4)) > 0.0);
        assert!(l.side((0.5, 0.6)) < 0.0);
        assert!((l.side((0.3, 0.3)) - 0.2).abs() < 1e-6);
        assert!(l.spans((0.5, 0.6), (0.5, 0.4)));
        // A short line: passing beside it is no crossing.
        let short = Line::new([[0.4, 0.5], [0.6, 0.5]], [0.0, 1.0]);
        assert!(!short.spans((0.9, 0.4), (0.9, 0.6)));
        assert!(short.spans((0.5, 0.4), (0.55, 0.6)));
    }

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
