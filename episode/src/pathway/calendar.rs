//! Local time, working days and the bank holidays of England and Wales.
//!
//! Deadlines are computed in Europe/London local time and reported in UTC
//! (`docs/rules.md`, "Times"). The time zone rules are compiled into the binary, so a phone
//! and the server compute the same instant whatever their system's time zone data.

use std::fmt;
use std::sync::LazyLock;

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
    /// The holidays added to the published table, as day numbers, sorted: the fast path
    /// ([`Fast`]) knows only the published table and the standing rules.
    added: Vec<i32>,
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
        Self { bank_holidays: ENGLAND_AND_WALES.to_vec(), added: Vec::new() }
    }

    /// This calendar with more bank holidays (a coronation, a jubilee).
    pub fn with_bank_holidays(mut self, extra: impl IntoIterator<Item = Date>) -> Self {
        self.bank_holidays.extend(extra);
        self.bank_holidays.sort();
        self.bank_holidays.dedup();
        self.added = self
            .bank_holidays
            .iter()
            .filter(|d| ENGLAND_AND_WALES.binary_search(d).is_err())
            .map(|d| day_number(*d))
            .collect();
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
        london_instant(local)
    }

    /// Same day: 23:59:59 local on the local date of `at`.
    pub fn same_day(&self, at: Timestamp) -> Timestamp {
        FAST.same_day(at).unwrap_or_else(|| self.instant(self.local(at).date().at(23, 59, 59, 0)))
    }

    /// N working days: 17:00 local on the Nth working day after the local date of `at`.
    pub fn working_days_after(&self, at: Timestamp, n: u32) -> Timestamp {
        FAST.working_days_after(self, at, n).unwrap_or_else(|| self.working_days_after_by_jiff(at, n))
    }

    /// [`Self::working_days_after`] counted with jiff's dates, beyond the fast path's years.
    #[cold]
    #[inline(never)]
    fn working_days_after_by_jiff(&self, at: Timestamp, n: u32) -> Timestamp {
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
        FAST.days_later(at, i64::from(n)).unwrap_or_else(|| self.days_after_by_jiff(at, n))
    }

    #[cold]
    #[inline(never)]
    fn days_after_by_jiff(&self, at: Timestamp, n: u32) -> Timestamp {
        let local = self.local(at);
        let later = local.checked_add(i64::from(n).days()).unwrap_or(local);
        self.instant(later)
    }

    /// N calendar days earlier, at the same local clock time.
    pub fn days_before(&self, at: Timestamp, n: u32) -> Timestamp {
        FAST.days_later(at, -i64::from(n)).unwrap_or_else(|| self.days_before_by_jiff(at, n))
    }

    #[cold]
    #[inline(never)]
    fn days_before_by_jiff(&self, at: Timestamp, n: u32) -> Timestamp {
        let local = self.local(at);
        let earlier = local.checked_sub(i64::from(n).days()).unwrap_or(local);
        self.instant(earlier)
    }

    /// N hours of elapsed real time.
    pub fn hours_after(&self, at: Timestamp, n: u32) -> Timestamp {
        // After 1970, the seconds added directly: the instant that adding the duration
        // gives, without jiff's general arithmetic (many actions are due in hours).
        if at.as_second() >= 0
            && at.subsec_nanosecond() >= 0
            && let Ok(later) = Timestamp::new(at.as_second() + i64::from(n) * 3600, at.subsec_nanosecond())
        {
            return later;
        }
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
        FAST.is_office_hours(self, at).unwrap_or_else(|| self.is_office_hours_by_jiff(at))
    }

    #[cold]
    #[inline(never)]
    fn is_office_hours_by_jiff(&self, at: Timestamp) -> bool {
        let local = self.local(at);
        let hour = local.hour();
        self.is_working_day(local.date()) && (9..17).contains(&hour)
    }

    /// The local date of an instant.
    pub fn date_of(&self, at: Timestamp) -> Date {
        self.local(at).date()
    }
}

/// [`Calendar::instant`], which depends on no holiday.
fn london_instant(local: DateTime) -> Timestamp {
    // `compatible` only fails beyond jiff's supported range (years -9999 to 9999),
    // which the record years (1900 to 2999) never reach.
    LONDON.to_ambiguous_timestamp(local).compatible().unwrap_or(Timestamp::MAX)
}

/// The day number of a date: days since 1 January 1970 (proleptic Gregorian).
fn day_number(day: Date) -> i32 {
    // Howard Hinnant's `days_from_civil`, with the year starting in March.
    let (month, d) = (i32::from(day.month()), i32::from(day.day()));
    let y = i32::from(day.year()) - i32::from(month <= 2);
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day number (the inverse of [`day_number`]).
fn date_of_day_number(day: i32) -> Option<Date> {
    // Howard Hinnant's `civil_from_days`, with the year starting in March.
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let d = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i32::from(month <= 2);
    Date::new(i16::try_from(year).ok()?, i8::try_from(month).ok()?, i8::try_from(d).ok()?).ok()
}

/// Monday to Friday (0 to 4) from a day number: 1 January 1970 was a Thursday.
fn weekday_of(day: i32) -> i32 {
    (day + 3).rem_euclid(7)
}

/// The years the fast path covers; outside them, or whenever it is unsure, the calendar
/// asks jiff.
const FAST_YEARS: std::ops::Range<i16> = 2000..2100;

const DAY: i64 = 86_400;

/// In [`Fast::offsets`], a UTC day on which London's offset changes.
const CHANGES: i32 = i32::MIN;

/// A fast path for the calendar's questions (the local date and clock time of an
/// instant, the instant of a local clock time, working days), built once from jiff and
/// the holiday rules above.
///
/// Why: an evaluation works out a deadline for about every record, and asking jiff for
/// London's offset, walking `Date`s and binary-searching `Date`s for bank holidays was
/// a third of the time. Here days are plain numbers and everything is looked up by day
/// in tables made from jiff's own transitions and [`Calendar::is_working_day`]'s rules;
/// only on the days around a clock change is jiff asked, for that one instant. It
/// answers `None` outside its years, where the callers ask jiff for everything; a unit
/// test compares the two every half hour over several years.
struct Fast {
    /// The day number of 1 January of the first year.
    first_day: i32,
    /// For each UTC day from `first_day`: London's offset in seconds if it is the same
    /// all day, else [`CHANGES`].
    offsets: Vec<i32>,
    /// One bit per day from `first_day`: every local clock time of that date happens
    /// exactly once, at that day's offset (the offset is the same from the UTC day
    /// before to the UTC day after).
    steady: Vec<u64>,
    /// One bit per day from `first_day`: Monday to Friday, and not a bank holiday in the
    /// published table or by the standing rules outside it (exactly
    /// [`Calendar::is_working_day`] for a calendar with no added holidays).
    working: Vec<u64>,
    /// For each day from `first_day`: how many days on the next working day is, by
    /// `working` (0 when it is beyond the tables), so that counting working days is a
    /// step per day counted.
    next_working: Vec<u8>,
    /// For each day from `first_day`: the instant (in seconds) of 17:00 and of 23:59:59
    /// local that day, as [`Calendar::instant`] gives them. Nearly every action has one
    /// of these two deadlines, and near a clock change asking jiff again each time cost
    /// more than the rest of the deadline. (`i64::MAX`, which is no instant, where neither
    /// way gave one: the callers then ask jiff.)
    deadlines: Vec<[i64; 2]>,
}

static FAST: LazyLock<Fast> = LazyLock::new(Fast::new);

fn bit(bits: &[u64], i: usize) -> bool {
    bits.get(i / 64).is_some_and(|word| word & (1 << (i % 64)) != 0)
}

fn set_bit(bits: &mut [u64], i: usize) {
    if let Some(word) = bits.get_mut(i / 64) {
        *word |= 1 << (i % 64);
    }
}

impl Fast {
    fn new() -> Self {
        let first_day = day_number(date(FAST_YEARS.start, 1, 1));
        let end_day = day_number(date(FAST_YEARS.end, 1, 1));
        let days = (end_day - first_day) as usize;
        // Midnight UTC starting a day; far inside jiff's range.
        let midnight = |day: i32| Timestamp::from_second(i64::from(day) * DAY).unwrap_or(Timestamp::MAX);
        let mut offset = LONDON.to_offset(midnight(first_day)).seconds();
        let mut changes = LONDON.following(midnight(first_day)).peekable();
        let mut offsets = Vec::with_capacity(days);
        for day in first_day..end_day {
            let next = midnight(day + 1);
            let mut changed = false;
            while let Some(change) = changes.next_if(|t| t.timestamp() < next) {
                offset = change.offset().seconds();
                changed = true;
            }
            offsets.push(if changed { CHANGES } else { offset });
        }
        let mut steady = vec![0; days.div_ceil(64)];
        for i in 1..days.saturating_sub(1) {
            if offsets[i] != CHANGES && offsets[i - 1] == offsets[i] && offsets[i + 1] == offsets[i] {
                set_bit(&mut steady, i);
            }
        }
        let mut holidays = vec![0; days.div_ceil(64)];
        let mut mark = |day: Date| {
            if let Ok(i) = usize::try_from(day_number(day) - first_day) {
                set_bit(&mut holidays, i);
            }
        };
        ENGLAND_AND_WALES.iter().copied().for_each(&mut mark);
        FAST_YEARS.filter(|y| !TABLE_YEARS.contains(y)).flat_map(standing_bank_holidays).for_each(&mut mark);
        let mut working = vec![0; days.div_ceil(64)];
        for i in 0..days {
            // Monday to Friday (0 to 4).
            if weekday_of(first_day + i as i32) < 5 && !bit(&holidays, i) {
                set_bit(&mut working, i);
            }
        }
        let mut next_working = vec![0; days];
        let mut next = None;
        for i in (0..days).rev() {
            next_working[i] = next.and_then(|n: usize| u8::try_from(n - i).ok()).unwrap_or(0);
            if bit(&working, i) {
                next = Some(i);
            }
        }
        let mut fast = Self { first_day, offsets, steady, working, next_working, deadlines: Vec::new() };
        fast.deadlines = (0..days)
            .map(|i| {
                let at = |hour, minute, second| {
                    fast.instant_by_offset(i, hour, minute, second)
                        .or_else(|| Self::instant_near_a_change(fast.first_day + i as i32, hour, minute, second))
                        .map_or(i64::MAX, |t| t.as_second())
                };
                [at(17, 0, 0), at(23, 59, 59)]
            })
            .collect();
        fast
    }

    /// The index in the tables of a day number.
    #[cfg(test)]
    fn index(&self, day: i32) -> Option<usize> {
        usize::try_from(day.checked_sub(self.first_day)?).ok().filter(|i| *i < self.offsets.len())
    }

    /// The index in the tables of the local date of an instant.
    fn local_index(&self, at: Timestamp) -> Option<usize> {
        self.local_index_and_clock(at).map(|(i, _)| i)
    }

    /// The index in the tables of the local date of an instant, and its local clock time
    /// in whole seconds since midnight.
    fn local_index_and_clock(&self, at: Timestamp) -> Option<(usize, i64)> {
        // Within the tables an instant is after 1970, so its whole seconds are not
        // negative (nor is its fraction of a second) and give the date: unsigned division
        // is enough, and cheaper.
        let second = u64::try_from(at.as_second()).ok()?;
        let first = u64::try_from(self.first_day).ok()?;
        let utc_day = usize::try_from((second / DAY as u64).checked_sub(first)?).ok()?;
        let offset = match *self.offsets.get(utc_day)? {
            // The day the clocks change: jiff knows which side of it the instant is.
            CHANGES => LONDON.to_offset(at).seconds(),
            offset => offset,
        };
        let local = second.checked_add_signed(i64::from(offset))?;
        let index = usize::try_from((local / DAY as u64).checked_sub(first)?).ok()?;
        Some((index, i64::try_from(local % DAY as u64).ok()?))
    }

    /// The same local clock time `n` days later (or earlier), where it happens once.
    fn days_later(&self, at: Timestamp, n: i64) -> Option<Timestamp> {
        let (i, clock) = self.local_index_and_clock(at)?;
        let j = usize::try_from(i64::try_from(i).ok()?.checked_add(n)?).ok()?;
        // (Where the clock time may be skipped or repeated, jiff decides.)
        if j >= self.offsets.len() || !bit(&self.steady, j) {
            return None;
        }
        let day = i64::from(self.first_day) + i64::try_from(j).ok()?;
        Timestamp::new(day * DAY + clock - i64::from(self.offsets[j]), at.subsec_nanosecond()).ok()
    }

    /// 09:00 to 17:00 local on a working day.
    fn is_office_hours(&self, calendar: &Calendar, at: Timestamp) -> Option<bool> {
        let (i, clock) = self.local_index_and_clock(at)?;
        Some(self.is_working_day(calendar, i)? && (9 * 3600..17 * 3600).contains(&clock))
    }

    /// The instant of a local clock time on the day at index `i`, as
    /// [`Calendar::instant`] gives it.
    #[cfg(test)]
    fn instant(&self, i: usize, hour: i8, minute: i8, second: i8) -> Option<Timestamp> {
        let day = self.first_day.checked_add(i32::try_from(i).ok()?)?;
        self.instant_by_offset(i, hour, minute, second)
            .or_else(|| Self::instant_near_a_change(day, hour, minute, second))
    }

    /// The instant of a local clock time on the day at index `i` from the day's offset,
    /// where every clock time of that day happens exactly once; `None` elsewhere.
    fn instant_by_offset(&self, i: usize, hour: i8, minute: i8, second: i8) -> Option<Timestamp> {
        let day = self.first_day.checked_add(i32::try_from(i).ok()?)?;
        if !bit(&self.steady, i) {
            return None;
        }
        let clock = i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
        Timestamp::from_second(i64::from(day) * DAY + clock - i64::from(self.offsets[i])).ok()
    }

    /// Near a clock change a clock time may be skipped or repeated: jiff decides.
    #[cold]
    #[inline(never)]
    fn instant_near_a_change(day: i32, hour: i8, minute: i8, second: i8) -> Option<Timestamp> {
        Some(london_instant(date_of_day_number(day)?.at(hour, minute, second, 0)))
    }

    /// 17:00 (`which` 0) or 23:59:59 (`which` 1) local on the day at index `i`.
    fn deadline_on(&self, i: usize, which: usize) -> Option<Timestamp> {
        Timestamp::from_second(self.deadlines.get(i)?[which]).ok()
    }

    /// Whether the day at index `i` is a working day for this calendar.
    fn is_working_day(&self, calendar: &Calendar, i: usize) -> Option<bool> {
        if i >= self.offsets.len() {
            return None;
        }
        let added = || {
            let day = self.first_day.checked_add(i32::try_from(i).ok()?)?;
            Some(calendar.added.binary_search(&day).is_ok())
        };
        Some(bit(&self.working, i) && (calendar.added.is_empty() || !added()?))
    }

    fn same_day(&self, at: Timestamp) -> Option<Timestamp> {
        self.deadline_on(self.local_index(at)?, 1)
    }

    fn working_days_after(&self, calendar: &Calendar, at: Timestamp, n: u32) -> Option<Timestamp> {
        let mut i = self.local_index(at)?;
        if calendar.added.is_empty() {
            for _ in 0..n {
                i += usize::from(*self.next_working.get(i).filter(|step| **step > 0)?);
            }
        } else {
            let mut counted = 0;
            while counted < n {
                i += 1;
                if self.is_working_day(calendar, i)? {
                    counted += 1;
                }
            }
        }
        self.deadline_on(i, 0)
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
    fn day_numbers_and_weekdays_match_jiff() {
        assert_eq!(day_number(date(1970, 1, 1)), 0);
        let mut day = date(1900, 1, 1);
        let mut n = day_number(day);
        while day.year() < 2200 {
            assert_eq!(day_number(day), n, "{day}");
            assert_eq!(date_of_day_number(n), Some(day), "{day}");
            assert_eq!(weekday_of(n), i32::from(day.weekday().to_monday_zero_offset()), "{day}");
            day = next_day(day);
            n += 1;
        }
    }

    #[test]
    fn the_fast_path_gives_what_jiff_gives() {
        // Every half hour of 2024 to 2028, both clock changes of each year included.
        let cal = Calendar::england_and_wales();
        let start = at("2024-01-01T00:00:00Z");
        for step in 0..(5 * 366 * 48) {
            let at = start.checked_add(SignedDuration::from_mins(30 * step)).unwrap();
            let local = LONDON.to_datetime(at);
            assert_eq!(cal.same_day(at), cal.instant(local.date().at(23, 59, 59, 0)), "{at}");
            for n in [1, 2, 5] {
                assert_eq!(cal.working_days_after(at, n), cal.working_days_after_by_jiff(at, n), "{at} {n}");
            }
            // (And with a fraction of a second, kept as it is.)
            let odd = at.checked_add(SignedDuration::from_nanos(123_456_789)).unwrap();
            for n in [1, 7, 21, 183] {
                assert_eq!(cal.days_after(at, n), cal.days_after_by_jiff(at, n), "{at} {n}");
                assert_eq!(cal.days_before(at, n), cal.days_before_by_jiff(at, n), "{at} {n}");
                assert_eq!(cal.days_after(odd, n), cal.days_after_by_jiff(odd, n), "{odd} {n}");
            }
            assert_eq!(cal.is_office_hours(at), cal.is_office_hours_by_jiff(at), "{at}");
            let day = FAST.index(day_number(local.date())).unwrap();
            assert_eq!(FAST.local_index(at), Some(day), "{at}");
            // The same moment found again from its local clock time (in October 01:00 to
            // 01:59 happen twice, and jiff's choice is kept).
            let clock = (local.hour(), local.minute());
            let instant = FAST.instant(day, clock.0, clock.1, 0);
            assert_eq!(instant, Some(cal.instant(local)), "{local}");
        }
        // And the clock times the clocks skip (01:00 to 01:59 on the last Sunday of March).
        for day in [date(2026, 3, 29), date(2027, 3, 28)] {
            for minute in [0, 30] {
                let local = day.at(1, minute, 0, 0);
                assert!(LONDON.to_ambiguous_timestamp(local).is_ambiguous());
                let i = FAST.index(day_number(day)).unwrap();
                assert_eq!(FAST.instant(i, 1, minute, 0), Some(cal.instant(local)), "{local}");
            }
        }
        // Outside its years the fast path declines, and the calendar still answers.
        assert_eq!(FAST.local_index(at("2100-06-01T12:00:00Z")), None);
        assert_eq!(cal.working_days_after(at("2100-06-04T12:00:00Z"), 1), at("2100-06-07T16:00:00Z"));
        assert_eq!(cal.same_day(at("1990-06-04T12:00:00Z")), at("1990-06-04T22:59:59Z"));
    }

    #[test]
    fn the_fast_path_knows_every_bank_holiday() {
        let cal = Calendar::england_and_wales().with_bank_holidays([date(2026, 6, 8), date(2040, 7, 3)]);
        let mut day = date(FAST_YEARS.start, 1, 1);
        while day.year() < FAST_YEARS.end {
            let i = FAST.index(day_number(day)).unwrap();
            assert_eq!(FAST.is_working_day(&cal, i), Some(cal.is_working_day(day)), "{day}");
            day = next_day(day);
        }
        assert_eq!(FAST.index(day_number(day)), None);
        assert_eq!(FAST.is_working_day(&cal, FAST.offsets.len()), None);
        assert_eq!(cal.working_days_after(at("2026-06-05T12:00:00Z"), 1), at("2026-06-09T16:00:00Z"));
    }

    #[test]
    fn hours_are_what_adding_the_duration_gives() {
        let cal = Calendar::england_and_wales();
        let times = [
            at("1969-12-31T23:59:59.5Z"),
            at("1970-01-01T00:00:00Z"),
            at("1970-01-01T00:00:00.000000001Z"),
            at("2026-03-29T00:30:00.123456789Z"),
            at("9999-12-30T20:00:00Z"),
            Timestamp::MAX,
            Timestamp::MIN,
        ];
        for time in times {
            for n in [0, 1, 4, 24, 366 * 24, u32::MAX] {
                let by_jiff = time.checked_add(SignedDuration::from_hours(i64::from(n))).unwrap_or(time);
                assert_eq!(cal.hours_after(time, n), by_jiff, "{time} {n}");
            }
        }
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
