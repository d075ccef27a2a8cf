//! Geometry of the small SVG line charts (difficulty and block times).

/// A polyline through `values`, scaled into a `width` × `height` box (y grows down,
/// with the smallest value at the bottom), as the `points` attribute of an SVG
/// `<polyline>`. A flat series is drawn in the middle; an empty one is empty.
pub fn polyline(values: &[f64], width: f64, height: f64) -> String {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return String::new();
    }
    let (lo, hi) = bounds(&finite);
    let n = finite.len();
    let step = if n > 1 { width / (n - 1) as f64 } else { 0.0 };
    finite
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let y = if hi > lo { height - (v - lo) / (hi - lo) * height } else { height / 2.0 };
            format!("{:.1},{:.1}", i as f64 * step, y)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Smallest and largest value.
pub fn bounds(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_into_the_box() {
        assert_eq!(polyline(&[1.0, 3.0, 2.0], 100.0, 50.0), "0.0,50.0 50.0,0.0 100.0,25.0");
        assert_eq!(polyline(&[5.0, 5.0], 10.0, 10.0), "0.0,5.0 10.0,5.0");
        assert_eq!(polyline(&[], 10.0, 10.0), "");
        assert_eq!(polyline(&[f64::NAN, 2.0], 10.0, 10.0), "0.0,5.0");
    }
}
