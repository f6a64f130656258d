//! The NHS number: ten digits, the last a modulus 11 check digit of the first nine.
//!
//! The check (NHS Data Dictionary, "NHS NUMBER"): multiply each of the first nine digits
//! by a weight, 10 for the first down to 2 for the ninth, and add the products; the check
//! digit is 11 less the remainder of that sum divided by 11, where 11 becomes 0 and 10
//! means the number is not valid. Only a number whose tenth digit is that check digit is
//! an NHS number; anything else a trust uses as `patient_ref` is a local identifier.

use std::fmt;

/// A valid NHS number, as ten digits.
///
/// It identifies a patient, so, like `PatientRef`, it has no `Display` and its `Debug`
/// is redacted: writing it anywhere goes through [`NhsNumber::as_str`].
#[derive(Clone, PartialEq, Eq)]
pub struct NhsNumber(String);

impl NhsNumber {
    /// Reads an NHS number: ten digits, or the same in the 3-3-4 groups it is printed in
    /// (`943 476 5919`), whose check digit holds. `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        let digits: Vec<u8> = match bytes.len() {
            10 => bytes.to_vec(),
            // The printed form: exactly one space after the third and the sixth digit.
            12 if bytes[3] == b' ' && bytes[7] == b' ' => {
                bytes.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 7).map(|(_, b)| *b).collect()
            }
            _ => return None,
        };
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let values: Vec<u8> = digits.iter().map(|d| d - b'0').collect();
        let first_nine: [u8; 9] = values[..9].try_into().ok()?;
        (check_digit(&first_nine)? == values[9]).then(|| Self(String::from_utf8_lossy(&digits).into_owned()))
    }

    /// The ten digits. Never put them in a log, a panic or an error message.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NhsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NhsNumber(<redacted>)")
    }
}

/// The modulus 11 check digit of an NHS number's first nine digits (each 0–9), or `None`
/// where the remainder leaves 10: no NHS number starts with those nine digits.
pub fn check_digit(first_nine: &[u8; 9]) -> Option<u8> {
    let sum: u32 = first_nine.iter().zip((2..=10).rev()).map(|(digit, weight)| u32::from(*digit) * weight).sum();
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        check => Some(check as u8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits(text: &str) -> [u8; 9] {
        let values: Vec<u8> = text.bytes().map(|b| b - b'0').collect();
        values.try_into().expect("nine digits")
    }

    #[test]
    fn a_valid_nhs_number_is_read_plain_or_in_its_printed_groups() {
        // 9×10 + 4×9 + 3×8 + 4×7 + 7×6 + 6×5 + 5×4 + 9×3 + 1×2 = 299; 299 mod 11 = 2; 11 − 2 = 9.
        assert_eq!(check_digit(&digits("943476591")), Some(9));
        assert_eq!(NhsNumber::parse("9434765919").map(|n| n.as_str().to_owned()).as_deref(), Some("9434765919"));
        assert_eq!(NhsNumber::parse("943 476 5919").map(|n| n.as_str().to_owned()).as_deref(), Some("9434765919"));
    }

    #[test]
    fn a_wrong_check_digit_is_not_an_nhs_number() {
        for wrong in (0..=9).filter(|d| *d != 9) {
            assert!(NhsNumber::parse(&format!("943476591{wrong}")).is_none(), "check digit {wrong}");
        }
    }

    #[test]
    fn a_remainder_that_leaves_ten_makes_no_nhs_number_whatever_the_last_digit() {
        // 6×2 = 12, 12 mod 11 = 1, 11 − 1 = 10: no check digit.
        assert_eq!(check_digit(&digits("000000006")), None);
        for last in 0..=9 {
            assert!(NhsNumber::parse(&format!("000000006{last}")).is_none());
        }
        // A remainder of 0 gives 11, written 0.
        assert_eq!(check_digit(&digits("000000000")), Some(0));
        assert!(NhsNumber::parse("0000000000").is_some());
    }

    #[test]
    fn only_ten_digits_are_an_nhs_number() {
        for text in [
            "",
            "943476591",            // nine digits
            "94347659190",          // eleven
            "943476591X",           // a letter
            "943-476-5919",         // hyphens are not the printed form
            "943  476 5919",        // two spaces
            "9434 765919",          // groups in the wrong place
            " 9434765919",          // padded
            "９４３４７６５９１９", // full-width digits
            "RX-EXAMPLE-0001",
        ] {
            assert!(NhsNumber::parse(text).is_none(), "{text:?}");
        }
    }

    #[test]
    fn the_check_digit_agrees_with_the_rule_for_every_weighting_position() {
        // Each digit alone, at each position: the sum is the digit times its weight.
        for position in 0..9 {
            for digit in 1..=9u8 {
                let mut nine = [0u8; 9];
                nine[position] = digit;
                let weight = 10 - position as u32;
                let expected = match 11 - (u32::from(digit) * weight) % 11 {
                    11 => Some(0),
                    10 => None,
                    c => Some(c as u8),
                };
                assert_eq!(check_digit(&nine), expected, "digit {digit} at {position}");
            }
        }
    }

    #[test]
    fn its_debug_never_shows_the_number() {
        let number = NhsNumber::parse("9434765919").expect("valid");
        assert!(!format!("{number:?}").contains("943"));
    }
}
