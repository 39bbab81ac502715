//! From robot metres to Twinzo sector millimetres.
//!
//! A sector's frame is reached by an affine map `X = a*x + b*y + tx`, `Y = c*x + d*y + ty`,
//! which covers scale (1000 mm per metre), rotation, offset and the Y flip (Twinzo's Y grows
//! downwards from the sector's top-left corner). `twinzo-bridge calibrate` fits one from
//! surveyed points. Results are `f32`, the type of Twinzo's `X`/`Y`/`Z`.

use serde::{Deserialize, Serialize};

/// An affine transform from metres to millimetres.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Affine {
    pub a: f64,
    pub b: f64,
    pub c: f64,
    pub d: f64,
    pub tx: f64,
    pub ty: f64,
}

impl Affine {
    /// Metres to millimetres, no rotation, no flip.
    pub const METRES_TO_MM: Affine = Affine {
        a: 1000.0,
        b: 0.0,
        c: 0.0,
        d: 1000.0,
        tx: 0.0,
        ty: 0.0,
    };

    /// Maps a robot position (metres) into sector millimetres.
    pub fn apply(&self, x: f64, y: f64) -> (f32, f32) {
        let sx = self.a * x + self.b * y + self.tx;
        let sy = self.c * x + self.d * y + self.ty;
        (sx as f32, sy as f32)
    }

    /// The vertical axis has no rotation to do, only the scale of the plane (the geometric mean of
    /// the axes' scales, from the determinant), so `Z` stays in proportion to `X` and `Y`.
    pub fn apply_z(&self, z: f64) -> f32 {
        let scale = (self.a * self.d - self.b * self.c).abs().sqrt();
        (z * scale) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_scales_metres_to_millimetres() {
        assert_eq!(
            Affine::METRES_TO_MM.apply(12.5, 40.25),
            (12_500.0, 40_250.0)
        );
        assert_eq!(Affine::METRES_TO_MM.apply_z(0.5), 500.0);
    }

    #[test]
    fn flip_and_offset_move_origin_to_top_left() {
        // A 30 m tall sector: robot y = 0 is the bottom edge, Twinzo Y = 30,000 mm.
        let t = Affine {
            a: 1000.0,
            b: 0.0,
            c: 0.0,
            d: -1000.0,
            tx: 500.0,
            ty: 30_000.0,
        };
        assert_eq!(t.apply(0.0, 0.0), (500.0, 30_000.0));
        assert_eq!(t.apply(2.0, 30.0), (2_500.0, 0.0));
        assert_eq!(t.apply_z(1.0), 1000.0);
    }

    #[test]
    fn rotation_by_ninety_degrees_swaps_axes() {
        let t = Affine {
            a: 0.0,
            b: -1000.0,
            c: 1000.0,
            d: 0.0,
            tx: 0.0,
            ty: 0.0,
        };
        assert_eq!(t.apply(1.0, 2.0), (-2000.0, 1000.0));
    }

    #[test]
    fn results_are_float32_millimetres() {
        let (x, _) = Affine::METRES_TO_MM.apply(123.456_789, 0.0);
        assert!((x - 123_456.79).abs() < 0.01);
    }
}
