//! The rise/fall state machine of a server's checks: consecutive results against
//! thresholds, a flip reported once.

/// Consecutive probe results of one server, and the thresholds in force.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Active checks configured: only then do failures eject the server.
    pub checked: bool,
    pub rise: u32,
    pub fall: u32,
    passes: u32,
    failures: u32,
}

/// A change of a server's state, reported once when it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flip {
    Down,
    Up,
}

impl Counters {
    /// Records one probe result against the server's current state; returns the flip
    /// when a threshold is reached. Only consecutive results count.
    pub fn record(&mut self, pass: bool, up: bool) -> Option<Flip> {
        if pass {
            self.failures = 0;
            self.passes = self.passes.saturating_add(1);
            (!up && self.passes >= self.rise).then_some(Flip::Up)
        } else {
            self.passes = 0;
            self.failures = self.failures.saturating_add(1);
            (up && self.failures >= self.fall).then_some(Flip::Down)
        }
    }

    /// "2/2": failures so far out of `fall`, for the log line.
    pub fn failures_of_fall(&self) -> String {
        format!("{}/{}", self.failures.min(self.fall), self.fall)
    }

    pub fn passes_of_rise(&self) -> String {
        format!("{}/{}", self.passes.min(self.rise), self.rise)
    }

    /// Checked with these thresholds, nothing counted yet: what tests start from.
    #[cfg(test)]
    pub fn checked(rise: u32, fall: u32) -> Counters {
        Counters {
            checked: true,
            rise,
            fall,
            ..Counters::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_after_consecutive_failures_only() {
        let mut c = Counters::checked(2, 3);
        assert_eq!(c.record(false, true), None);
        assert_eq!(c.record(false, true), None);
        assert_eq!(c.record(true, true), None);
        assert_eq!(c.record(false, true), None);
        assert_eq!(c.record(false, true), None);
        assert_eq!(c.record(false, true), Some(Flip::Down));
        assert_eq!(c.failures_of_fall(), "3/3");
    }

    #[test]
    fn rises_after_consecutive_passes() {
        let mut c = Counters::checked(2, 1);
        assert_eq!(c.record(false, true), Some(Flip::Down));
        assert_eq!(c.record(true, false), None);
        assert_eq!(c.record(false, false), None);
        assert_eq!(c.record(true, false), None);
        assert_eq!(c.record(true, false), Some(Flip::Up));
    }

    #[test]
    fn no_flip_when_already_in_that_state() {
        let mut c = Counters::checked(1, 1);
        assert_eq!(c.record(true, true), None);
        assert_eq!(c.record(false, false), None);
    }
}
