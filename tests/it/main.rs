//! The one integration-test binary: every test speaks HTTP to a real server on 127.0.0.1:0 with a
//! temporary data directory (in-process through `support::TestServer`, or the real binary through
//! `support::Binary`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod account;
mod acme;
mod apps;
mod bootstrap;
mod browser;
mod crash;
mod dashboard;
mod dns;
mod domains;
mod fuzz_seeds;
mod gateway;
mod http_core;
mod keys;
mod logging;
mod monetization;
mod offline;
mod openapi;
mod rate_limits;
mod reach;
mod receiver;
mod signin;
mod soak;
mod storage;
mod support;
mod tls;
mod topup;
mod upstream;
mod vectors;
mod wallet_auth;
mod webhooks;
