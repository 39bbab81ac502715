//! Geometry of the simulated floor: the region robots stay in, the rounded-rectangle loop they
//! can follow, and where their chargers are.

use std::f64::consts::{FRAC_PI_2, PI, TAU};
use std::fmt;
use std::str::FromStr;

use rand::Rng;

use super::PathKind;

/// A rectangle of the robot map, in metres: `x0,y0,x1,y1` on the command line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

impl FromStr for Region {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let values: Vec<f64> = s
            .split(',')
            .map(|v| v.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("expected four numbers x0,y0,x1,y1, got {s:?}"))?;
        let [x0, y0, x1, y1] = values[..] else {
            return Err(format!("expected four numbers x0,y0,x1,y1, got {s:?}"));
        };
        if x1 - x0 < 1.0 || y1 - y0 < 1.0 {
            return Err("x1 and y1 must exceed x0 and y0 by at least 1 m".into());
        }
        Ok(Region { x0, y0, x1, y1 })
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{},{}", self.x0, self.y0, self.x1, self.y1)
    }
}

/// The drivable area (the region less a margin) and, for the loop, its rounded rectangle.
#[derive(Debug, Clone)]
pub(super) struct Path {
    kind: PathKind,
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
    radius: f64,
    segments: [Segment; 8],
    length: f64,
}

/// One piece of the loop, travelled counter-clockwise.
#[derive(Debug, Clone, Copy, Default)]
struct Segment {
    /// Straight: start point. Arc: centre.
    x: f64,
    y: f64,
    /// Straight: direction of travel. Arc: angle of the start point seen from the centre.
    angle: f64,
    length: f64,
    arc: bool,
}

impl Path {
    pub(super) fn new(kind: PathKind, region: Region) -> Path {
        let margin = (region.x1 - region.x0).min(region.y1 - region.y0) * 0.1;
        let (x0, y0) = (region.x0 + margin, region.y0 + margin);
        let (x1, y1) = (region.x1 - margin, region.y1 - margin);
        let r = (x1 - x0).min(y1 - y0) * 0.25;
        let (w, h) = (x1 - x0 - 2.0 * r, y1 - y0 - 2.0 * r);
        let quarter = FRAC_PI_2 * r;
        let straight = |x, y, angle, length| Segment {
            x,
            y,
            angle,
            length,
            arc: false,
        };
        let arc = |x, y, angle| Segment {
            x,
            y,
            angle,
            length: quarter,
            arc: true,
        };
        let segments = [
            straight(x0 + r, y0, 0.0, w),
            arc(x1 - r, y0 + r, -FRAC_PI_2),
            straight(x1, y0 + r, FRAC_PI_2, h),
            arc(x1 - r, y1 - r, 0.0),
            straight(x1 - r, y1, PI, w),
            arc(x0 + r, y1 - r, FRAC_PI_2),
            straight(x0, y1 - r, -FRAC_PI_2, h),
            arc(x0 + r, y0 + r, PI),
        ];
        let length = segments.iter().map(|s| s.length).sum();
        Path {
            kind,
            x0,
            y0,
            x1,
            y1,
            radius: r,
            segments,
            length,
        }
    }

    /// The loop's length in metres.
    pub(super) fn length(&self) -> f64 {
        self.length
    }

    /// Position and heading `s` metres along the loop from its start (bottom edge, heading +x).
    pub(super) fn at(&self, s: f64) -> (f64, f64, f64) {
        let mut s = s.rem_euclid(self.length);
        for seg in &self.segments {
            if s <= seg.length {
                return if seg.arc {
                    let phi = seg.angle + s / self.radius;
                    let (sin, cos) = phi.sin_cos();
                    let (x, y) = (seg.x + self.radius * cos, seg.y + self.radius * sin);
                    (x, y, wrap_angle(phi + FRAC_PI_2))
                } else {
                    let (sin, cos) = seg.angle.sin_cos();
                    (seg.x + s * cos, seg.y + s * sin, wrap_angle(seg.angle))
                };
            }
            s -= seg.length;
        }
        let (x, y, h) = (self.segments[0].x, self.segments[0].y, 0.0);
        (x, y, h)
    }

    /// A uniformly random point of the drivable area.
    pub(super) fn random_point(&self, rng: &mut impl Rng) -> (f64, f64) {
        (
            rng.random_range(self.x0..=self.x1),
            rng.random_range(self.y0..=self.y1),
        )
    }

    /// The charger of robot `idx` of `n` for the region path: spread along the left edge.
    /// (On the loop a robot charges where it started, see `Fleet`.)
    pub(super) fn dock(&self, idx: usize, n: usize) -> (f64, f64) {
        match self.kind {
            PathKind::Loop => {
                let (x, y, _) = self.at(self.length * idx as f64 / n as f64);
                (x, y)
            }
            PathKind::Region => {
                let step = (self.y1 - self.y0) / n as f64;
                (self.x0, self.y0 + step * (idx as f64 + 0.5))
            }
        }
    }
}

/// Normalises an angle to (-pi, pi].
fn wrap_angle(a: f64) -> f64 {
    let a = a.rem_euclid(TAU);
    if a > PI {
        a - TAU
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> Region {
        "0,0,40,25".parse().unwrap()
    }

    #[test]
    fn region_parses_four_numbers_and_rejects_the_rest() {
        assert_eq!(
            region(),
            Region {
                x0: 0.0,
                y0: 0.0,
                x1: 40.0,
                y1: 25.0
            }
        );
        assert_eq!(" -5, 2.5 ,10,20".parse::<Region>().unwrap().x0, -5.0);
        for bad in [
            "0,0,40",
            "0,0,40,25,1",
            "a,0,40,25",
            "0,0,0.5,25",
            "0,0,NaN,25",
        ] {
            assert!(bad.parse::<Region>().is_err(), "{bad}");
        }
    }

    #[test]
    fn loop_is_closed_continuous_and_inside_the_region() {
        let path = Path::new(PathKind::Loop, region());
        let (sx, sy, _) = path.at(0.0);
        let (ex, ey, _) = path.at(path.length() - 1e-9);
        assert!((sx - ex).hypot(sy - ey) < 1e-6);

        let steps = 2000;
        let mut prev = path.at(0.0);
        for i in 1..=steps {
            let p = path.at(path.length() * f64::from(i) / f64::from(steps));
            let jump = (p.0 - prev.0).hypot(p.1 - prev.1);
            assert!(
                jump <= path.length() / f64::from(steps) + 1e-6,
                "jump {jump} at step {i}"
            );
            assert!(
                (2.499..=37.501).contains(&p.0) && (2.499..=22.501).contains(&p.1),
                "{p:?}"
            );
            // The heading points along the direction of travel.
            let (dx, dy) = (p.0 - prev.0, p.1 - prev.1);
            let dir = dy.atan2(dx);
            assert!(
                wrap_angle(dir - p.2).abs() < 0.05,
                "heading {} vs travel {dir}",
                p.2
            );
            prev = p;
        }
    }

    #[test]
    fn region_docks_sit_on_the_left_edge() {
        let path = Path::new(PathKind::Region, region());
        let docks: Vec<_> = (0..4).map(|i| path.dock(i, 4)).collect();
        assert!(docks
            .iter()
            .all(|d| d.0 == 2.5 && (2.5..=22.5).contains(&d.1)));
        assert!(docks.windows(2).all(|w| w[1].1 > w[0].1));
    }
}
