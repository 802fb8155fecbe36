//! UTC calendar arithmetic without a time-zone database: unix seconds to and
//! from a civil date and time (Howard Hinnant's `civil_from_days` and
//! `days_from_civil`). Used for key listings and SigV4's `x-amz-date`.

/// A UTC date and time, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
}

impl DateTime {
    pub fn from_unix(secs: i64) -> Self {
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        DateTime {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
        }
    }

    /// Unix seconds (fields are taken as given: callers check their ranges).
    pub fn to_unix(&self) -> i64 {
        let y = if self.month <= 2 {
            self.year - 1
        } else {
            self.year
        };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (self.month + 9) % 12;
        let doy = (153 * mp + 2) / 5 + self.day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days * 86_400 + self.hour * 3600 + self.minute * 60 + self.second
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_known_dates() {
        let t = DateTime::from_unix(1_440_938_160); // AWS's SigV4 example date
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second),
            (2015, 8, 30, 12, 36, 0)
        );
        for secs in [-86_400 * 400, 0, 951_782_400, 1_440_938_160, 4_102_444_800] {
            assert_eq!(DateTime::from_unix(secs).to_unix(), secs);
        }
        assert_eq!(DateTime::from_unix(951_782_400).day, 29); // 2000-02-29
    }
}
