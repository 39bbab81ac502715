//! `twinzo-bridge calibrate`: fits the robot-metres to sector-millimetres transform.
//!
//! Input is a CSV of surveyed pairs, a robot position in metres and the same spot in the Twinzo
//! sector in millimetres, with the header `x_m,y_m,X_mm,Y_mm` (any order, extra columns ignored,
//! `#` starts a comment). Two fits are offered:
//!
//! - [`fit_affine`]: least squares over all six coefficients of `X = a*x + b*y + tx`,
//!   `Y = c*x + d*y + ty`. It absorbs scale errors and shear, so it needs points that span an
//!   area; three points fit exactly and leave no residual to judge the survey by.
//! - [`fit_similarity`]: rotation and translation with the scale fixed at 1000 mm per metre and
//!   an optional Y flip (a reflection). Robot maps are metric, so this is the more robust choice
//!   when the survey is rough.
//!
//! The report is the `[[sectors]]` snippet for the config, a table of every point's fitted
//! position and residual, and the RMS and maximum error. Degenerate input (fewer than three
//! points, two points at the same robot position, points on a line) is refused: a fit from points
//! on a line cannot reveal an error across that line, not even a wrong flip.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Millimetres per metre, the fixed scale of [`fit_similarity`].
pub const MM_PER_M: f64 = 1000.0;

/// Two robot points closer than this (metres) are the same point.
const DUPLICATE_M: f64 = 0.001;

/// Points are collinear when their spread across the best line is below this fraction of their
/// spread along it (the ratio of the centred design matrix's singular values).
const MIN_SPREAD_RATIO: f64 = 0.01;

const HEADER: [&str; 4] = ["x_m", "y_m", "X_mm", "Y_mm"];

#[derive(clap::Args, Debug, Clone)]
pub struct CalibrateArgs {
    /// CSV of surveyed pairs with the header `x_m,y_m,X_mm,Y_mm`; `#` starts a comment
    pub points: PathBuf,

    /// Fit rotation and translation only, with the scale fixed at 1000 mm per metre
    #[arg(long)]
    pub similarity: bool,

    /// With --similarity: the map is mirrored (Twinzo's Y grows downwards)
    #[arg(long, requires = "similarity")]
    pub flip_y: bool,

    /// Twinzo sector id to put in the config snippet
    #[arg(long)]
    pub sector_id: Option<i32>,
}

/// One surveyed point: where the robot says it is, and where that spot is in the sector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    pub x_m: f64,
    pub y_m: f64,
    pub x_mm: f64,
    pub y_mm: f64,
}

/// A fitted transform and how well it matches the points it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    pub a: f64,
    pub b: f64,
    pub c: f64,
    pub d: f64,
    pub tx: f64,
    pub ty: f64,
    /// Distance between each point's expected and fitted sector position, in input order.
    pub residuals_mm: Vec<f64>,
    pub rms_mm: f64,
    pub max_mm: f64,
}

impl Fit {
    fn new(coefficients: [f64; 6], points: &[Pair]) -> Fit {
        let [a, b, c, d, tx, ty] = coefficients;
        let mut fit = Fit {
            a,
            b,
            c,
            d,
            tx,
            ty,
            residuals_mm: Vec::new(),
            rms_mm: 0.0,
            max_mm: 0.0,
        };
        fit.residuals_mm = points
            .iter()
            .map(|p| {
                let (x, y) = fit.apply(p.x_m, p.y_m);
                (x - p.x_mm).hypot(y - p.y_mm)
            })
            .collect();
        let sum_sq: f64 = fit.residuals_mm.iter().map(|r| r * r).sum();
        fit.rms_mm = (sum_sq / points.len() as f64).sqrt();
        fit.max_mm = fit.residuals_mm.iter().copied().fold(0.0, f64::max);
        fit
    }

    /// Maps a robot position in metres to sector millimetres.
    pub fn apply(&self, x_m: f64, y_m: f64) -> (f64, f64) {
        (
            self.a * x_m + self.b * y_m + self.tx,
            self.c * x_m + self.d * y_m + self.ty,
        )
    }

    /// `[a, b, c, d, tx, ty]`, the order of a sector's `transform` in the config.
    pub fn coefficients(&self) -> [f64; 6] {
        [self.a, self.b, self.c, self.d, self.tx, self.ty]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("line {line}: {message}")]
    Parse { line: usize, message: String },
    #[error("need at least 3 points, got {0}")]
    TooFewPoints(usize),
    #[error("points {first} and {second} are the same robot position (within 1 mm)")]
    DuplicatePoints { first: usize, second: usize },
    #[error(
        "the robot points are collinear: they spread {along_m:.3} m along a line but only \
         {across_m:.3} m across it; survey points that span the area"
    )]
    Collinear { along_m: f64, across_m: f64 },
}

/// Reads the CSV, fits, and returns the report to print.
pub fn run(args: &CalibrateArgs) -> anyhow::Result<String> {
    let points = read_points(&args.points)?;
    let fit = if args.similarity {
        fit_similarity(&points, args.flip_y)?
    } else {
        fit_affine(&points)?
    };
    let method = if args.similarity {
        let flip = if args.flip_y { ", Y flipped" } else { "" };
        format!("similarity fit (scale fixed at 1000 mm/m{flip})")
    } else {
        "affine least-squares fit".to_owned()
    };
    Ok(report(&points, &fit, &method, args.sector_id))
}

pub fn read_points(path: &Path) -> Result<Vec<Pair>, CalibrateError> {
    let text = std::fs::read_to_string(path).map_err(|source| CalibrateError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_points(&text)
}

/// Parses the CSV text. Line numbers in errors count from 1, comments and blank lines included.
pub fn parse_points(text: &str) -> Result<Vec<Pair>, CalibrateError> {
    let mut columns: Option<(usize, [usize; 4])> = None;
    let mut points = Vec::new();

    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let fields: Vec<&str> = content.split(',').map(str::trim).collect();

        let Some((width, at)) = columns else {
            columns = Some(parse_header(&fields, line)?);
            continue;
        };
        if fields.len() != width {
            let message = format!("expected {width} fields, found {}", fields.len());
            return Err(CalibrateError::Parse { line, message });
        }
        let mut values = [0.0; 4];
        for (value, (&column, name)) in values.iter_mut().zip(at.iter().zip(HEADER)) {
            let field = fields[column];
            *value = field
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| CalibrateError::Parse {
                    line,
                    message: format!("{name} is not a number: {field:?}"),
                })?;
        }
        let [x_m, y_m, x_mm, y_mm] = values;
        points.push(Pair {
            x_m,
            y_m,
            x_mm,
            y_mm,
        });
    }

    if columns.is_none() {
        let message = format!("no header; expected {}", HEADER.join(","));
        return Err(CalibrateError::Parse {
            line: text.lines().count().max(1),
            message,
        });
    }
    Ok(points)
}

/// Finds the four columns in the header; returns the field count and their positions.
fn parse_header(fields: &[&str], line: usize) -> Result<(usize, [usize; 4]), CalibrateError> {
    let mut at = [0; 4];
    for (slot, name) in at.iter_mut().zip(HEADER) {
        *slot = fields
            .iter()
            .position(|f| *f == name)
            .ok_or_else(|| CalibrateError::Parse {
                line,
                message: format!(
                    "expected the header {}, found {:?}",
                    HEADER.join(","),
                    fields.join(",")
                ),
            })?;
    }
    Ok((fields.len(), at))
}

/// Least-squares affine fit. The normal equations of the design matrix `[x y 1]` are solved on
/// coordinates centred at their mean, where the 3x3 system splits into a 2x2 block for the linear
/// part and the translation; this is the same solution with far better conditioning.
pub fn fit_affine(points: &[Pair]) -> Result<Fit, CalibrateError> {
    let c = Centred::check(points)?;

    // [sxx sxy; sxy syy] [a b]^T = [sxX syX]^T, and likewise for (c, d) with Y.
    let det = c.sxx * c.syy - c.sxy * c.sxy;
    let solve = |u: f64, v: f64| ((c.syy * u - c.sxy * v) / det, (c.sxx * v - c.sxy * u) / det);
    let (a, b) = solve(c.sx_x, c.sy_x);
    let (cc, d) = solve(c.sx_y, c.sy_y);

    let tx = c.mean_out.0 - a * c.mean_in.0 - b * c.mean_in.1;
    let ty = c.mean_out.1 - cc * c.mean_in.0 - d * c.mean_in.1;
    Ok(Fit::new([a, b, cc, d, tx, ty], points))
}

/// Rotation and translation with the scale fixed at [`MM_PER_M`]; with `flip_y` the robot's Y
/// axis is mirrored first. The angle is the Procrustes solution, the `atan2` of the centred
/// cross-covariance.
pub fn fit_similarity(points: &[Pair], flip_y: bool) -> Result<Fit, CalibrateError> {
    let c = Centred::check(points)?;
    let f = if flip_y { -1.0 } else { 1.0 };

    // With p = (x, f*y): sum of cross and dot products of p with the sector points.
    let cross = c.sx_y - f * c.sy_x;
    let dot = c.sx_x + f * c.sy_y;
    let theta = cross.atan2(dot);
    let (sin, cos) = theta.sin_cos();

    // [X Y]^T = s * R(theta) * diag(1, f) * [x y]^T + t
    let (a, b, cc, d) = (
        MM_PER_M * cos,
        -f * MM_PER_M * sin,
        MM_PER_M * sin,
        f * MM_PER_M * cos,
    );
    let tx = c.mean_out.0 - a * c.mean_in.0 - b * c.mean_in.1;
    let ty = c.mean_out.1 - cc * c.mean_in.0 - d * c.mean_in.1;
    Ok(Fit::new([a, b, cc, d, tx, ty], points))
}

/// Sums over the points centred at their means, after checking they can fix a transform.
struct Centred {
    mean_in: (f64, f64),
    mean_out: (f64, f64),
    sxx: f64,
    sxy: f64,
    syy: f64,
    /// Sum of centred robot x times centred sector X, and so on.
    sx_x: f64,
    sy_x: f64,
    sx_y: f64,
    sy_y: f64,
}

impl Centred {
    fn check(points: &[Pair]) -> Result<Centred, CalibrateError> {
        if points.len() < 3 {
            return Err(CalibrateError::TooFewPoints(points.len()));
        }
        for (i, p) in points.iter().enumerate() {
            for (j, q) in points.iter().enumerate().skip(i + 1) {
                if (p.x_m - q.x_m).hypot(p.y_m - q.y_m) < DUPLICATE_M {
                    return Err(CalibrateError::DuplicatePoints {
                        first: i + 1,
                        second: j + 1,
                    });
                }
            }
        }

        let n = points.len() as f64;
        let mean = |f: fn(&Pair) -> f64| points.iter().map(f).sum::<f64>() / n;
        let mean_in = (mean(|p| p.x_m), mean(|p| p.y_m));
        let mean_out = (mean(|p| p.x_mm), mean(|p| p.y_mm));
        let mut c = Centred {
            mean_in,
            mean_out,
            sxx: 0.0,
            sxy: 0.0,
            syy: 0.0,
            sx_x: 0.0,
            sy_x: 0.0,
            sx_y: 0.0,
            sy_y: 0.0,
        };
        for p in points {
            let (x, y) = (p.x_m - mean_in.0, p.y_m - mean_in.1);
            let (u, v) = (p.x_mm - mean_out.0, p.y_mm - mean_out.1);
            c.sxx += x * x;
            c.sxy += x * y;
            c.syy += y * y;
            c.sx_x += x * u;
            c.sy_x += y * u;
            c.sx_y += x * v;
            c.sy_y += y * v;
        }

        // Eigenvalues of the 2x2 scatter matrix: the squared singular values of the centred
        // design matrix, i.e. the spread along and across the best-fitting line.
        let half_trace = (c.sxx + c.syy) / 2.0;
        let gap = (((c.sxx - c.syy) / 2.0).powi(2) + c.sxy * c.sxy).sqrt();
        let along = (half_trace + gap).max(0.0).sqrt();
        let across = (half_trace - gap).max(0.0).sqrt();
        if across < MIN_SPREAD_RATIO * along {
            let rms = |s: f64| s / n.sqrt();
            return Err(CalibrateError::Collinear {
                along_m: rms(along),
                across_m: rms(across),
            });
        }
        Ok(c)
    }
}

/// The printed report: config snippet, per-point table, summary.
pub fn report(points: &[Pair], fit: &Fit, method: &str, sector_id: Option<i32>) -> String {
    let mut out = String::new();
    let coefficients: Vec<String> = fit.coefficients().iter().map(|&v| toml_float(v)).collect();
    let id = match sector_id {
        Some(id) => id.to_string(),
        None => "0 # replace with the Twinzo sector id (or pass --sector-id)".to_owned(),
    };
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# {method} from {} points", points.len());
    let _ = writeln!(
        out,
        "[[sectors]]\nid = {id}\ntransform = [{}]\n",
        coefficients.join(", ")
    );

    let _ = writeln!(
        out,
        "{:>3} {:>10} {:>10} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "#", "x_m", "y_m", "X_mm", "Y_mm", "fit_X_mm", "fit_Y_mm", "residual_mm"
    );
    for (i, (p, residual)) in points.iter().zip(&fit.residuals_mm).enumerate() {
        let (fx, fy) = fit.apply(p.x_m, p.y_m);
        let _ = writeln!(
            out,
            "{:>3} {:>10.3} {:>10.3} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>12.1}",
            i + 1,
            p.x_m,
            p.y_m,
            p.x_mm,
            p.y_mm,
            fx,
            fy,
            residual
        );
    }

    let worst = fit
        .residuals_mm
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1));
    let worst = worst
        .map(|(i, _)| format!(" (point {})", i + 1))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "\nrms error {:.1} mm, max error {:.1} mm{worst}",
        fit.rms_mm, fit.max_mm
    );
    let _ = write!(out, "{}", describe(fit));
    out
}

/// Scale, rotation and mirroring read back from the coefficients: a sanity check for the eye.
fn describe(fit: &Fit) -> String {
    let scale_x = fit.a.hypot(fit.c);
    let scale_y = fit.b.hypot(fit.d);
    let rotation = fit.c.atan2(fit.a).to_degrees();
    let mirrored = fit.a * fit.d - fit.b * fit.c < 0.0;
    format!(
        "scale {scale_x:.1} mm/m along robot x, {scale_y:.1} mm/m along robot y; rotation \
         {rotation:.2} deg; mirrored (Y flip): {}\n",
        if mirrored { "yes" } else { "no" }
    )
}

/// A float TOML reads back as a float: rounded to 0.1 µm per metre, always with a decimal point.
fn toml_float(value: f64) -> String {
    let rounded = (value * 1e4).round() / 1e4;
    let rounded = if rounded == 0.0 { 0.0 } else { rounded };
    format!("{rounded:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Rotation 30 degrees, scale 1000, Y mirrored, offset (5 m, 30 m) in mm.
    fn known() -> [f64; 6] {
        let (sin, cos) = 30f64.to_radians().sin_cos();
        [
            1000.0 * cos,
            1000.0 * sin,
            1000.0 * sin,
            -1000.0 * cos,
            5_000.0,
            30_000.0,
        ]
    }

    fn surveyed(t: [f64; 6], noise_mm: f64, seed: u64) -> Vec<Pair> {
        let mut rng = StdRng::seed_from_u64(seed);
        let robot = [
            (1.0, 2.0),
            (38.0, 1.5),
            (39.0, 24.0),
            (2.5, 23.0),
            (20.0, 12.0),
            (10.0, 18.0),
            (30.0, 6.0),
            (15.5, 4.0),
        ];
        robot
            .iter()
            .map(|&(x, y)| Pair {
                x_m: x,
                y_m: y,
                x_mm: t[0] * x + t[1] * y + t[4] + rng.random_range(-noise_mm..=noise_mm),
                y_mm: t[2] * x + t[3] * y + t[5] + rng.random_range(-noise_mm..=noise_mm),
            })
            .collect()
    }

    fn assert_close(fit: &Fit, want: [f64; 6]) {
        let got = fit.coefficients();
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            // 1 % of the coefficient, or 1 % of the scale for the rotation terms near zero.
            let tolerance = (w.abs() * 0.01).max(10.0);
            assert!(
                (g - w).abs() <= tolerance,
                "coefficient {i}: got {g}, want {w}"
            );
        }
    }

    #[test]
    fn affine_recovers_a_rotated_mirrored_offset_transform_from_noisy_points() {
        let points = surveyed(known(), 20.0, 7);
        let fit = fit_affine(&points).unwrap();
        assert_close(&fit, known());
        assert!(fit.rms_mm < 30.0, "rms {}", fit.rms_mm);
        assert_eq!(fit.residuals_mm.len(), 8);
        assert!(fit.max_mm >= fit.rms_mm);
    }

    #[test]
    fn affine_fit_is_exact_without_noise() {
        let points = surveyed(known(), 0.0, 1);
        let fit = fit_affine(&points).unwrap();
        for (g, w) in fit.coefficients().iter().zip(known()) {
            assert!((g - w).abs() < 1e-6, "got {g}, want {w}");
        }
        assert!(fit.max_mm < 1e-6);
    }

    #[test]
    fn similarity_with_flip_recovers_the_transform() {
        let points = surveyed(known(), 20.0, 11);
        let fit = fit_similarity(&points, true).unwrap();
        assert_close(&fit, known());
        assert!(fit.rms_mm < 30.0, "rms {}", fit.rms_mm);
        // The scale is fixed, not fitted.
        assert!((fit.a.hypot(fit.c) - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn similarity_without_flip_recovers_a_pure_rotation() {
        let (sin, cos) = (-75f64).to_radians().sin_cos();
        let t = [
            1000.0 * cos,
            -1000.0 * sin,
            1000.0 * sin,
            1000.0 * cos,
            -2_000.0,
            800.0,
        ];
        let fit = fit_similarity(&surveyed(t, 5.0, 3), false).unwrap();
        assert_close(&fit, t);
        assert!(fit.rms_mm < 10.0);
    }

    #[test]
    fn similarity_with_the_wrong_flip_shows_large_residuals() {
        let points = surveyed(known(), 20.0, 5);
        let fit = fit_similarity(&points, false).unwrap();
        assert!(fit.rms_mm > 1_000.0, "rms {}", fit.rms_mm);
    }

    #[test]
    fn rejects_fewer_than_three_points() {
        let points = &surveyed(known(), 0.0, 1)[..2];
        assert!(matches!(
            fit_affine(points),
            Err(CalibrateError::TooFewPoints(2))
        ));
        assert!(matches!(
            fit_similarity(points, true),
            Err(CalibrateError::TooFewPoints(2))
        ));
    }

    #[test]
    fn rejects_duplicate_robot_points() {
        let mut points = surveyed(known(), 0.0, 1);
        points[5].x_m = points[1].x_m + 0.0005;
        points[5].y_m = points[1].y_m;
        let err = fit_affine(&points).unwrap_err();
        assert!(
            matches!(
                err,
                CalibrateError::DuplicatePoints {
                    first: 2,
                    second: 6
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "points 2 and 6 are the same robot position (within 1 mm)"
        );
    }

    #[test]
    fn rejects_collinear_points_naming_them_collinear() {
        let points: Vec<Pair> = (0..5)
            .map(|i| {
                let x = f64::from(i) * 3.0;
                Pair {
                    x_m: x,
                    y_m: 2.0 * x + 1.0,
                    x_mm: x * 1000.0,
                    y_mm: x * 2000.0,
                }
            })
            .collect();
        let err = fit_affine(&points).unwrap_err();
        assert!(matches!(err, CalibrateError::Collinear { .. }));
        assert!(err.to_string().contains("collinear"), "{err}");
        assert!(matches!(
            fit_similarity(&points, false),
            Err(CalibrateError::Collinear { .. })
        ));
    }

    #[test]
    fn nearly_collinear_points_are_rejected_too() {
        let mut points = surveyed(known(), 0.0, 1);
        for p in &mut points {
            p.y_m = 5.0 + p.x_m * 0.001 * (p.x_m * 7.0).sin();
        }
        assert!(matches!(
            fit_affine(&points),
            Err(CalibrateError::Collinear { .. })
        ));
    }

    #[test]
    fn parses_csv_with_comments_blank_lines_and_reordered_columns() {
        let text = "# survey of hall B\n\nX_mm, Y_mm, x_m, y_m, name\n\
                    1000,2000,1.0,2.0,door # north door\n  \n3000.5,-4000,3,-4e0,dock\n";
        let points = parse_points(text).unwrap();
        assert_eq!(
            points,
            vec![
                Pair {
                    x_m: 1.0,
                    y_m: 2.0,
                    x_mm: 1000.0,
                    y_mm: 2000.0
                },
                Pair {
                    x_m: 3.0,
                    y_m: -4.0,
                    x_mm: 3000.5,
                    y_mm: -4000.0
                },
            ]
        );
    }

    #[test]
    fn csv_errors_carry_line_numbers() {
        let cases = [
            (
                "x_m,y_m,X_mm,Y_mm\n1,2,3,4\n# note\n1,2,x,4\n",
                4,
                "X_mm is not a number",
            ),
            (
                "x_m,y_m,X_mm,Y_mm\n1,2,3\n",
                2,
                "expected 4 fields, found 3",
            ),
            (
                "# header below\nx,y,X,Y\n1,2,3,4\n",
                2,
                "expected the header",
            ),
            (
                "x_m,y_m,X_mm,Y_mm\n\n1,2,3,inf\n",
                3,
                "Y_mm is not a number",
            ),
            ("# only a comment\n", 1, "no header"),
        ];
        for (text, want_line, want_message) in cases {
            match parse_points(text) {
                Err(CalibrateError::Parse { line, message }) => {
                    assert_eq!(line, want_line, "{text:?}: {message}");
                    assert!(message.contains(want_message), "{text:?}: {message}");
                }
                other => panic!("{text:?}: expected a parse error, got {other:?}"),
            }
        }
    }

    #[test]
    fn report_holds_the_config_snippet_table_and_errors() {
        let points = surveyed(known(), 20.0, 7);
        let fit = fit_affine(&points).unwrap();
        let text = report(&points, &fit, "affine least-squares fit", Some(42));

        let snippet = text.lines().skip(1).take(3).collect::<Vec<_>>().join("\n");
        assert!(
            snippet.starts_with("[[sectors]]\nid = 42\ntransform = ["),
            "{text}"
        );
        let table: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with('8'))
            .collect();
        assert_eq!(table.len(), 1, "{text}");
        assert!(text.contains("rms error"), "{text}");
        assert!(text.contains("mirrored (Y flip): yes"), "{text}");

        // The snippet is valid TOML in the config's shape, with the fitted values.
        #[derive(serde::Deserialize)]
        struct Sectors {
            sectors: Vec<Sector>,
        }
        #[derive(serde::Deserialize)]
        struct Sector {
            id: i32,
            transform: [f64; 6],
        }
        let parsed: Sectors = toml::from_str(&snippet).unwrap();
        assert_eq!(parsed.sectors[0].id, 42);
        for (g, w) in parsed.sectors[0].transform.iter().zip(fit.coefficients()) {
            assert!((g - w).abs() < 1e-3);
        }
    }

    #[test]
    fn floats_print_with_a_decimal_point() {
        assert_eq!(toml_float(-500.0), "-500.0");
        assert_eq!(toml_float(-0.000_01), "0.0");
        assert_eq!(toml_float(866.025_403_8), "866.0254");
    }

    #[test]
    fn run_reads_a_file_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("points.csv");
        let mut csv = String::from("x_m,y_m,X_mm,Y_mm\n");
        for p in surveyed(known(), 10.0, 9) {
            csv.push_str(&format!("{},{},{},{}\n", p.x_m, p.y_m, p.x_mm, p.y_mm));
        }
        std::fs::write(&path, csv).unwrap();

        let args = CalibrateArgs {
            points: path,
            similarity: true,
            flip_y: true,
            sector_id: None,
        };
        let text = run(&args).unwrap();
        assert!(text.starts_with("# similarity fit (scale fixed at 1000 mm/m, Y flipped)"));
        assert!(text.contains("id = 0 # replace with the Twinzo sector id"));

        let missing = CalibrateArgs {
            points: dir.path().join("nope.csv"),
            ..args
        };
        let err = run(&missing).unwrap_err();
        assert!(err.to_string().starts_with("cannot read"), "{err}");
    }
}
