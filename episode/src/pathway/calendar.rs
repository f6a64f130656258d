//! Local time, working days and the bank holidays of England and Wales.
//!
//! Deadlines are computed in Europe/London local time and reported in UTC
//! (`pathway.md`, "Times"). The time zone rules are compiled into the binary, so a phone
//! and the server compute the same instant whatever their system's time zone data.

use std::fmt;

use jiff::civil::{Date, DateTime, Weekday, date};
use jiff::tz::{self, TimeZone};
use jiff::{SignedDuration, Timestamp, ToSpan};

use super::defaults::Deadline;

static LONDON: TimeZone = tz::get!("Europe/London");

/// The bank holidays of England and Wales as published for 2024 to 2030.
///
/// Outside these years [`Calendar::england_and_wales`] falls back to the standing
/// rules (see [`standing_bank_holidays`]); a deployment adds any one-off holiday with
/// [`Calendar::with_bank_holidays`].
pub const ENGLAND_AND_WALES: &[Date] = &[
    // 2024
    date(2024, 1, 1),
    date(2024, 3, 29),
    date(2024, 4, 1),
    date(2024, 5, 6),
    date(2024, 5, 27),
    date(2024, 8, 26),
    date(2024, 12, 25),
    date(2024, 12, 26),
    // 2025
    date(2025, 1, 1),
    date(2025, 4, 18),
    date(2025, 4, 21),
    date(2025, 5, 5),
    date(2025, 5, 26),
    date(2025, 8, 25),
    date(2025, 12, 25),
    date(2025, 12, 26),
    // 2026
    date(2026, 1, 1),
    date(2026, 4, 3),
    date(2026, 4, 6),
    date(2026, 5, 4),
    date(2026, 5, 25),
    date(2026, 8, 31),
    date(2026, 12, 25),
    date(2026, 12, 28),
    // 2027
    date(2027, 1, 1),
    date(2027, 3, 26),
    date(2027, 3, 29),
    date(2027, 5, 3),
    date(2027, 5, 31),
    date(2027, 8, 30),
    date(2027, 12, 27),
    date(2027, 12, 28),
    // 2028
    date(2028, 1, 3),
    date(2028, 4, 14),
    date(2028, 4, 17),
    date(2028, 5, 1),
    date(2028, 5, 29),
    date(2028, 8, 28),
    date(2028, 12, 25),
    date(2028, 12, 26),
    // 2029
    date(2029, 1, 1),
    date(2029, 3, 30),
    date(2029, 4, 2),
    date(2029, 5, 7),
    date(2029, 5, 28),
    date(2029, 8, 27),
    date(2029, 12, 25),
    date(2029, 12, 26),
    // 2030
    date(2030, 1, 1),
    date(2030, 4, 19),
    date(2030, 4, 22),
    date(2030, 5, 6),
    date(2030, 5, 27),
    date(2030, 8, 26),
    date(2030, 12, 25),
    date(2030, 12, 26),
];

/// The years [`ENGLAND_AND_WALES`] covers.
pub const TABLE_YEARS: std::ops::RangeInclusive<i16> = 2024..=2030;

/// The calendar the rules count in: Europe/London time and its working days.
#[derive(Clone)]
pub struct Calendar {
    /// The published table, and any one-off holidays a deployment adds; sorted.
    bank_holidays: Vec<Date>,
}

impl fmt::Debug for Calendar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Calendar").field("bank_holidays", &self.bank_holidays).finish()
    }
}

impl Default for Calendar {
    fn default() -> Self {
        Self::england_and_wales()
    }
}

impl Calendar {
    /// England and Wales: the published table for 2024 to 2030, and the standing rules
    /// for other years.
    pub fn england_and_wales() -> Self {
        Self { bank_holidays: ENGLAND_AND_WALES.to_vec() }
    }

    /// This calendar with more bank holidays (a coronation, a jubilee).
    pub fn with_bank_holidays(mut self, extra: impl IntoIterator<Item = Date>) -> Self {
        self.bank_holidays.extend(extra);
        self.bank_holidays.sort();
        self.bank_holidays.dedup();
        self
    }

    /// Monday to Friday, less bank holidays.
    pub fn is_working_day(&self, day: Date) -> bool {
        !matches!(day.weekday(), Weekday::Saturday | Weekday::Sunday) && !self.is_bank_holiday(day)
    }

    /// A bank holiday: in the table (or added), or by the standing rules outside it.
    pub fn is_bank_holiday(&self, day: Date) -> bool {
        self.bank_holidays.binary_search(&day).is_ok()
            || (!TABLE_YEARS.contains(&day.year()) && standing_bank_holidays(day.year()).contains(&day))
    }

    /// The local date and clock time of an instant.
    pub fn local(&self, at: Timestamp) -> DateTime {
        LONDON.to_datetime(at)
    }

    /// The instant of a local date and clock time. In the hour the clocks go forward a
    /// clock time does not exist and the later reading is taken; in the hour they go back
    /// it exists twice and the earlier is taken.
    pub fn instant(&self, local: DateTime) -> Timestamp {
        // `compatible` only fails beyond jiff's supported range (years -9999 to 9999),
        // which the record years (1900 to 2999) never reach.
        LONDON.to_ambiguous_timestamp(local).compatible().unwrap_or(Timestamp::MAX)
    }

    /// Same day: 23:59:59 local on the local date of `at`.
    pub fn same_day(&self, at: Timestamp) -> Timestamp {
        self.instant(self.local(at).date().at(23, 59, 59, 0))
    }

    /// N working days: 17:00 local on the Nth working day after the local date of `at`.
    pub fn working_days_after(&self, at: Timestamp, n: u32) -> Timestamp {
        let mut day = self.local(at).date();
        let mut weekday = day.weekday().to_monday_zero_offset();
        let mut counted = 0;
        while counted < n {
            day = next_day(day);
            weekday = (weekday + 1) % 7;
            // Monday to Friday (0 to 4), less bank holidays.
            if weekday < 5 && !self.is_bank_holiday(day) {
                counted += 1;
            }
        }
        self.instant(day.at(17, 0, 0, 0))
    }

    /// N days: the same local clock time N calendar days later, across clock changes.
    pub fn days_after(&self, at: Timestamp, n: u32) -> Timestamp {
        let local = self.local(at);
        let later = local.checked_add(i64::from(n).days()).unwrap_or(local);
        self.instant(later)
    }

    /// N calendar days earlier, at the same local clock time.
    pub fn days_before(&self, at: Timestamp, n: u32) -> Timestamp {
        let local = self.local(at);
        let earlier = local.checked_sub(i64::from(n).days()).unwrap_or(local);
        self.instant(earlier)
    }

    /// N hours of elapsed real time.
    pub fn hours_after(&self, at: Timestamp, n: u32) -> Timestamp {
        at.checked_add(SignedDuration::from_hours(i64::from(n))).unwrap_or(at)
    }

    /// When a deadline of this length, counted from `at`, falls.
    pub fn deadline(&self, at: Timestamp, deadline: Deadline) -> Timestamp {
        match deadline {
            Deadline::Immediately => at,
            Deadline::SameDay => self.same_day(at),
            Deadline::Hours(n) => self.hours_after(at, n),
            Deadline::Days(n) => self.days_after(at, n),
            Deadline::WorkingDays(n) => self.working_days_after(at, n),
        }
    }

    /// 09:00 to 17:00 local on a working day: when the team manager is in the office
    /// rather than the on-call manager (Appendix A). 17:00 itself is out of hours.
    pub fn is_office_hours(&self, at: Timestamp) -> bool {
        let local = self.local(at);
        let hour = local.hour();
        self.is_working_day(local.date()) && (9..17).contains(&hour)
    }

    /// The local date of an instant.
    pub fn date_of(&self, at: Timestamp) -> Date {
        self.local(at).date()
    }
}

fn next_day(day: Date) -> Date {
    // Dates here stay within 1900..=3000, far inside jiff's range.
    day.tomorrow().unwrap_or(day)
}

/// The bank holidays of England and Wales by their standing rules: New Year's Day,
/// Good Friday, Easter Monday, the first and last Mondays of May, the last Monday of
/// August, Christmas Day and Boxing Day, with a weekday substitute for any that falls
/// on a weekend. One-off holidays are not in it.
pub fn standing_bank_holidays(year: i16) -> Vec<Date> {
    let easter = easter_sunday(year);
    let shift = |d: Date, days: i64| d.checked_add(days.days()).unwrap_or(d);
    let first_monday = |month: i8| {
        let first = date(year, month, 1);
        let offset = (7 + 1 - i64::from(first.weekday().to_monday_one_offset())) % 7;
        shift(first, offset)
    };
    let last_monday = |month: i8| {
        let last = date(year, month, 1).last_of_month();
        let back = i64::from(last.weekday().to_monday_zero_offset());
        shift(last, -back)
    };
    let new_year = match date(year, 1, 1).weekday() {
        Weekday::Saturday => date(year, 1, 3),
        Weekday::Sunday => date(year, 1, 2),
        _ => date(year, 1, 1),
    };
    let (christmas, boxing_day) = match date(year, 12, 25).weekday() {
        Weekday::Friday => (date(year, 12, 25), date(year, 12, 28)),
        Weekday::Saturday => (date(year, 12, 27), date(year, 12, 28)),
        Weekday::Sunday => (date(year, 12, 27), date(year, 12, 26)),
        _ => (date(year, 12, 25), date(year, 12, 26)),
    };
    let mut days = vec![
        new_year,
        shift(easter, -2),
        shift(easter, 1),
        first_monday(5),
        last_monday(5),
        last_monday(8),
        christmas,
        boxing_day,
    ];
    days.sort();
    days
}

/// Easter Sunday in the Gregorian calendar (the anonymous Gregorian algorithm).
fn easter_sunday(year: i16) -> Date {
    let y = i32::from(year);
    let a = y % 19;
    let b = y / 100;
    let c = y % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    // Both are small by construction: month is 3 or 4, day 1 to 31.
    date(year, month as i8, day as i8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn the_table_matches_the_standing_rules() {
        for year in TABLE_YEARS {
            let table: Vec<Date> = ENGLAND_AND_WALES.iter().copied().filter(|d| d.year() == year).collect();
            assert_eq!(table, standing_bank_holidays(year), "{year}");
        }
    }

    #[test]
    fn easter() {
        assert_eq!(easter_sunday(2024), date(2024, 3, 31));
        assert_eq!(easter_sunday(2026), date(2026, 4, 5));
        assert_eq!(easter_sunday(2038), date(2038, 4, 25));
    }

    #[test]
    fn same_day_on_the_days_the_clocks_change() {
        let cal = Calendar::england_and_wales();
        // 29 March 2026: the clocks go forward at 01:00 GMT; 23:59:59 is BST.
        assert_eq!(cal.same_day(at("2026-03-29T00:30:00Z")), at("2026-03-29T22:59:59Z"));
        // 25 October 2026: the clocks go back at 02:00 BST; 23:59:59 is GMT.
        assert_eq!(cal.same_day(at("2026-10-25T00:30:00Z")), at("2026-10-25T23:59:59Z"));
        // 00:30 BST on 2 June is still 1 June in UTC: the local date counts.
        assert_eq!(cal.same_day(at("2026-06-01T23:30:00Z")), at("2026-06-02T22:59:59Z"));
    }

    #[test]
    fn days_keep_the_local_clock_across_a_clock_change() {
        let cal = Calendar::england_and_wales();
        // 10:00 GMT on 25 March plus 7 days is 10:00 BST on 1 April.
        assert_eq!(cal.days_after(at("2026-03-25T10:00:00Z"), 7), at("2026-04-01T09:00:00Z"));
        // Hours are elapsed time.
        assert_eq!(cal.hours_after(at("2026-03-29T00:30:00Z"), 4), at("2026-03-29T04:30:00Z"));
    }

    #[test]
    fn working_days_skip_christmas_and_bank_holiday_mondays() {
        let cal = Calendar::england_and_wales();
        // Thursday 24 December 2026: 25th Friday and 28th Monday are holidays.
        assert_eq!(cal.working_days_after(at("2026-12-24T11:00:00Z"), 1), at("2026-12-29T17:00:00Z"));
        assert_eq!(cal.working_days_after(at("2026-12-24T11:00:00Z"), 2), at("2026-12-30T17:00:00Z"));
        // Friday 1 May 2026 (BST); Monday 4 May is the early May bank holiday.
        assert_eq!(cal.working_days_after(at("2026-05-01T09:00:00Z"), 1), at("2026-05-05T16:00:00Z"));
    }

    #[test]
    fn office_hours() {
        let cal = Calendar::england_and_wales();
        assert!(cal.is_office_hours(at("2026-03-02T09:00:00Z")));
        assert!(!cal.is_office_hours(at("2026-03-02T17:00:00Z")));
        assert!(!cal.is_office_hours(at("2026-03-07T12:00:00Z"))); // Saturday
        assert!(!cal.is_office_hours(at("2026-12-28T12:00:00Z"))); // bank holiday
        assert!(!cal.is_office_hours(at("2026-06-01T16:30:00Z"))); // 17:30 BST
    }
}
