//! Twinzo: the wire types, the retry table and the HTTP client.
//!
//! - [`model`]: locations and responses as Twinzo spells them (PascalCase, unix ms).
//! - [`classify`]: the one pure function that decides, for every outcome of a request, whether
//!   it is accepted, retried, re-authenticated or rejected.
//! - [`client`]: device mode (token per login) and API-key mode (`/v3/localization/batch`).

pub mod classify;
pub mod client;
pub mod model;

pub use classify::Verdict;
pub use client::{Delivery, Twinzo, TwinzoError};
pub use model::Location;
