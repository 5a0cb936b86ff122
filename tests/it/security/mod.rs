//! The security suite: every attack of the threat model tried against a real deja (two tenants, a
//! real store, a provider stand-in and an "attacker" stand-in that records what it receives).
//! Each attack is a named test; each asserts that the attacker got nothing.

mod attacks;
mod layers;
mod limits;
mod property;
mod scene;
mod secrets;
mod tenants;
