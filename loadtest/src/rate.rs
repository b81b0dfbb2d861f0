//! How fast a run sends: a fixed rate, a linear ramp, a share of the engine's measured ceiling,
//! or "as fast as it holds up" (closed loop: send while the pipeline keeps its backlog small).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// `--rate`: `20` (fixed, per second), `10..200` (linear ramp over the run's duration), `50%`
/// (a share of the engine's raw BatchWriteItem ceiling, measured at the start of the run), or
/// `max` (as fast as the pipeline holds up: a new batch goes out only while fewer than
/// `--max-backlog` sent submissions wait to be delivered).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateSpec {
    Fixed(f64),
    Ramp { from: f64, to: f64 },
    OfCeiling(f64),
    Max,
}

impl FromStr for RateSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let num = |v: &str| -> Result<f64, String> {
            match v.trim().parse::<f64>() {
                Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
                _ => Err(format!("{v:?} is not a positive number of submissions per second")),
            }
        };
        if s.eq_ignore_ascii_case("max") {
            return Ok(RateSpec::Max);
        }
        if let Some(p) = s.strip_suffix('%') {
            let p = num(p)?;
            return if p <= 1000.0 { Ok(RateSpec::OfCeiling(p / 100.0)) } else { Err(format!("{s}: at most 1000%")) };
        }
        if let Some((a, b)) = s.split_once("..") {
            return Ok(RateSpec::Ramp { from: num(a)?, to: num(b)? });
        }
        num(s).map(RateSpec::Fixed).map_err(|e| format!("{e} (use N, A..B, P% or max)"))
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateSpec::Fixed(r) => write!(f, "{r}"),
            RateSpec::Ramp { from, to } => write!(f, "{from}..{to}"),
            RateSpec::OfCeiling(p) => write!(f, "{}%", p * 100.0),
            RateSpec::Max => f.write_str("max"),
        }
    }
}

/// An open-loop schedule: how many submissions are due `t` into a run lasting `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub from: f64,
    pub to: f64,
    pub duration: Duration,
}

impl Schedule {
    pub fn fixed(rate: f64, duration: Duration) -> Self {
        Schedule { from: rate, to: rate, duration }
    }

    /// Submissions due by `t`: the integral of the (linearly ramping) rate from 0 to `t`.
    pub fn due(&self, t: Duration) -> f64 {
        let d = self.duration.as_secs_f64().max(1e-9);
        let t = t.as_secs_f64().min(d);
        self.from * t + (self.to - self.from) * t * t / (2.0 * d)
    }

    /// The rate at `t`.
    pub fn rate_at(&self, t: Duration) -> f64 {
        let d = self.duration.as_secs_f64().max(1e-9);
        self.from + (self.to - self.from) * (t.as_secs_f64() / d).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_rate_parses_and_bad_ones_name_the_problem() {
        assert_eq!("20".parse::<RateSpec>(), Ok(RateSpec::Fixed(20.0)));
        assert_eq!("10..200".parse::<RateSpec>(), Ok(RateSpec::Ramp { from: 10.0, to: 200.0 }));
        assert_eq!("50%".parse::<RateSpec>(), Ok(RateSpec::OfCeiling(0.5)));
        assert_eq!("MAX".parse::<RateSpec>(), Ok(RateSpec::Max));
        for bad in ["0", "-3", "fast", "10..", "nan", "5000%", ""] {
            assert!(bad.parse::<RateSpec>().is_err(), "{bad}");
        }
        assert_eq!(RateSpec::Ramp { from: 1.0, to: 2.5 }.to_string(), "1..2.5");
    }

    #[test]
    fn a_ramp_sends_the_area_under_its_rate() {
        let s = Schedule { from: 10.0, to: 30.0, duration: Duration::from_secs(10) };
        // (10 + 30) / 2 * 10 s = 200 submissions over the whole ramp; 10*5 + 20*25/20 = 75 by half time.
        assert!((s.due(Duration::from_secs(10)) - 200.0).abs() < 1e-9);
        assert!((s.due(Duration::from_secs(5)) - 75.0).abs() < 1e-9);
        assert!((s.due(Duration::from_secs(20)) - 200.0).abs() < 1e-9);
        assert!((s.rate_at(Duration::from_secs(5)) - 20.0).abs() < 1e-9);
        let f = Schedule::fixed(4.0, Duration::from_secs(60));
        assert!((f.due(Duration::from_millis(2500)) - 10.0).abs() < 1e-9);
    }
}
