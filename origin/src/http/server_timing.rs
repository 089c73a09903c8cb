//! The `Server-Timing` header: each stage of a request and its duration in milliseconds, so a
//! browser's devtools or the edge's logs show where the time went.

use crate::recommend::Timings;

/// `embed;dur=0.41, retrieve;dur=1.20, …` (milliseconds, two decimals).
pub fn header_value(timings: &Timings) -> String {
    timings
        .0
        .iter()
        .map(|stage| format!("{};dur={:.2}", stage.name, stage.duration.as_secs_f64() * 1000.0))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stages_in_order_in_milliseconds() {
        let mut timings = Timings::default();
        timings.add("embed", Duration::from_micros(410));
        timings.add("total", Duration::from_millis(6));
        assert_eq!(header_value(&timings), "embed;dur=0.41, total;dur=6.00");
    }
}
