//! The state every request sees: configuration, store, clock and metrics.

use std::sync::Arc;

use crate::clock::{Clock, Timestamp};
use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::store::Store;

pub struct AppState {
    pub config: ServeConfig,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    pub started_at: Timestamp,
}

impl AppState {
    pub fn new(config: ServeConfig, store: Store, clock: Arc<dyn Clock>) -> AppState {
        let started_at = clock.now();
        AppState {
            config,
            store,
            clock,
            metrics: Metrics::default(),
            started_at,
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}
