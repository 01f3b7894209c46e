//! Time as a value: every rule that depends on time takes a [`Timestamp`], and the server reads it
//! from one injectable [`Clock`], so tests pin or step time instead of sleeping. `clock.rs` holds
//! the clocks, `rfc3339.rs` the text form, `civil.rs` the calendar arithmetic.

pub mod civil;
pub mod clock;
pub mod http_date;
pub mod rfc3339;

pub use clock::{Clock, ManualClock, SystemClock};
pub use http_date::parse_http_date;
pub use rfc3339::parse_rfc3339;

/// Milliseconds since the Unix epoch (UTC). Stored records keep this integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const fn from_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch, rounded down.
    pub const fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub const fn plus_millis(self, millis: i64) -> Self {
        Timestamp(self.0.saturating_add(millis))
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`, the form JavaScript's `toISOString` gives and the hosted
    /// cloud's JSON shows (also what `Display` writes, without allocating).
    pub fn to_rfc3339(self) -> String {
        self.to_string()
    }
}
