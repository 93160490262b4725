//! The allocation-ratio curve (METHOD.md §5): after every pod, arrived and
//! allocated GPU thousandths; binned by arrived demand in whole percent of
//! capacity, with the analysis scripts' Python rounding.

/// Columns 0..=130.
pub const COLUMNS: usize = 131;

/// One event: GPU thousandths arrived so far (failed pods included) and
/// allocated now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Σ `num × milli` of all pods submitted so far.
    pub arrived: u64,
    /// Σ allocated thousandths over all nodes.
    pub used: u64,
}

/// Python's `round(x)`: to the nearest integer, ties to even.
pub fn py_round0(x: f64) -> f64 {
    x.round_ties_even()
}

/// Python's `round(x, 2)`: correctly rounded on the exact binary value,
/// ties to even (Rust's formatting rounds the same way).
pub fn py_round2(x: f64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    format!("{x:.2}").parse().unwrap_or(x)
}

/// The curve for one run: column `c` is `round(mean(alloc%), 2)` over the
/// events with `round(arrive%) == c`, or over `[c−1, c+1]` when that bin is
/// empty; `None` when both are empty. `gpus` is the capacity in GPUs
/// (percentages are computed as `x / gpus / 10`, as the scripts do).
pub fn curve(events: &[Event], gpus: u64) -> Vec<Option<f64>> {
    let mut sum = vec![0.0f64; COLUMNS];
    let mut count = vec![0u64; COLUMNS];
    let g = gpus.max(1) as f64;
    for e in events {
        let arrive = py_round0(e.arrived as f64 / g / 10.0);
        if !(0.0..COLUMNS as f64).contains(&arrive) {
            continue;
        }
        let alloc = py_round2(e.used as f64 / g / 10.0);
        sum[arrive as usize] += alloc;
        count[arrive as usize] += 1;
    }
    (0..COLUMNS)
        .map(|c| {
            if count[c] > 0 {
                return Some(py_round2(sum[c] / count[c] as f64));
            }
            let lo = c.saturating_sub(1);
            let hi = (c + 1).min(COLUMNS - 1);
            let (s, n) = (lo..=hi).fold((0.0, 0), |(s, n), k| (s + sum[k], n + count[k]));
            (n > 0).then(|| py_round2(s / n as f64))
        })
        .collect()
}

/// The mean of several curves, column by column, over the runs that have
/// the column.
pub fn mean_curve(curves: &[Vec<Option<f64>>]) -> Vec<Option<f64>> {
    (0..COLUMNS)
        .map(|c| {
            let vals: Vec<f64> = curves
                .iter()
                .filter_map(|v| v.get(c).copied().flatten())
                .collect();
            (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding() {
        assert_eq!(py_round0(2.5), 2.0);
        assert_eq!(py_round0(3.5), 4.0);
        assert_eq!(py_round0(0.49999), 0.0);
        assert_eq!(py_round2(0.125), 0.12);
        assert_eq!(py_round2(0.375), 0.38);
        assert_eq!(py_round2(0.025), 0.03);
        assert_eq!(py_round2(1.005), 1.0);
        assert_eq!(py_round2(95.385), 95.39);
    }
}
