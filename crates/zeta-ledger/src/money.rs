use std::fmt;
use std::str::FromStr;

/// The largest amount one command may move: 2^53 − 1, exactly representable in every JSON client.
pub const MAX_AMOUNT: i64 = 9_007_199_254_740_991;

/// A positive amount of minor units (cents), `1..=MAX_AMOUNT`. Balances are plain `i64` and every
/// operation on them is checked.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(i64);

impl Amount {
    pub fn new(minor_units: i64) -> Option<Self> {
        (1..=MAX_AMOUNT)
            .contains(&minor_units)
            .then_some(Self(minor_units))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// An ISO 4217-shaped currency code: exactly three ASCII upper-case letters.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn as_str(&self) -> &str {
        // The constructor admits only ASCII upper-case letters, which are valid UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl FromStr for Currency {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let bytes = s.as_bytes();
        if bytes.len() == 3 && bytes.iter().all(u8::is_ascii_uppercase) {
            Ok(Self([bytes[0], bytes[1], bytes[2]]))
        } else {
            Err(())
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amount_bounds() {
        assert_eq!(Amount::new(0), None);
        assert_eq!(Amount::new(-1), None);
        assert_eq!(Amount::new(1).map(Amount::get), Some(1));
        assert_eq!(Amount::new(MAX_AMOUNT).map(Amount::get), Some(MAX_AMOUNT));
        assert_eq!(Amount::new(MAX_AMOUNT + 1), None);
    }

    #[test]
    fn currency_shape() {
        assert_eq!(
            "USD".parse::<Currency>().map(|c| c.to_string()),
            Ok("USD".into())
        );
        for bad in ["usd", "US", "USDX", "", "U$D", "ÜSD"] {
            assert!(bad.parse::<Currency>().is_err(), "{bad} must be rejected");
        }
    }
}
